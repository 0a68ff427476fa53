//! `flmm sam`: plain promptable segmentation with a SAM checkpoint — mask PNG(s), an overlay and the raw
//! logits — using the on-disk embedding cache when asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use flmm_head::sam::cache::EmbeddingCache;
use flmm_head::sam::preprocess::preprocess;
use flmm_head::sam::prompt_encoder::{PointPrompt, Prompts};
use flmm_head::sam::Sam;
use image::{Rgb, RgbImage};

/// A `flmm sam` request.
pub struct SamRequest {
    /// Checkpoint (`sam_vit_*.pth`, `mobile_sam.pt`, or safetensors).
    pub checkpoint: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Box `[x0, y0, x1, y1]` in image pixels.
    pub bbox: Option<[f32; 4]>,
    /// Points `(x, y, label)` in image pixels.
    pub points: Vec<(f32, f32, i32)>,
    /// Return SAM's three multimask outputs instead of one mask.
    pub multimask: bool,
    /// Embedding cache directory.
    pub cache: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
}

/// Parses `x,y` or `x,y,label`.
pub fn parse_point(s: &str) -> Result<(f32, f32, i32), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |p: &str| p.parse::<f32>().map_err(|_| format!("bad number {p:?} in point {s:?} (expected x,y[,label])"));
    match parts.as_slice() {
        [x, y] => Ok((num(x)?, num(y)?, 1)),
        [x, y, l] => {
            let label = l.parse::<i32>().map_err(|_| format!("bad label {l:?} in point {s:?}"))?;
            if label != 0 && label != 1 {
                return Err(format!("point label must be 1 (foreground) or 0 (background), got {label}"));
            }
            Ok((num(x)?, num(y)?, label))
        }
        _ => Err(format!("bad point {s:?}: expected x,y or x,y,label")),
    }
}

/// Parses `x0,y0,x1,y1` with `x0 < x1`, `y0 < y1`.
pub fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v: Vec<f32> = s.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| format!("bad box {s:?}: expected x0,y0,x1,y1"))?;
    match v.as_slice() {
        [x0, y0, x1, y1] if x0 < x1 && y0 < y1 => Ok([*x0, *y0, *x1, *y1]),
        [_, _, _, _] => Err(format!("bad box {s:?}: need x0 < x1 and y0 < y1")),
        _ => Err(format!("bad box {s:?}: expected x0,y0,x1,y1")),
    }
}

/// Runs SAM and writes `mask[_k].png`, `overlay.png` and `logits.safetensors`; returns the paths.
pub fn run(req: &SamRequest) -> anyhow::Result<Vec<PathBuf>> {
    if req.points.is_empty() && req.bbox.is_none() {
        bail!("give at least one --point x,y[,label] or a --box x0,y0,x1,y1");
    }
    let image = flmm_data::image_io::load_rgb_image(&req.image)?;
    let (w, h) = (image.width() as f32, image.height() as f32);
    for &(x, y, _) in &req.points {
        if !(0.0..=w).contains(&x) || !(0.0..=h).contains(&y) {
            bail!("point ({x}, {y}) is outside the {w}×{h} image");
        }
    }
    let sam = Sam::load_file(&req.checkpoint)?;
    let device = Device::Cpu;
    let (embedding, geometry) = match &req.cache {
        Some(dir) => {
            let entry = EmbeddingCache::new(dir, &sam).get_or_compute(&sam, &image, &device)?;
            eprintln!("image embedding: {}", if entry.hit { "from the cache" } else { "computed and cached" });
            (entry.embedding, entry.geometry)
        }
        None => {
            let (x, g) = preprocess(&image, sam.image_encoder.input_size(), &device)?;
            (sam.image_encoder.forward(&x)?, g)
        }
    };
    let prompts = Prompts {
        points: req.points.iter().map(|&(x, y, label)| {
            let (x, y) = geometry.map_point(x, y);
            PointPrompt { x, y, label }
        }).collect(),
        bbox: req.bbox.map(|b| geometry.map_box(b)),
        mask: None,
    };
    let pred = sam.predict(&embedding, &geometry, &prompts, None, req.multimask)?;
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let masks = pred.masks.squeeze(0)?; // [m, H, W]
    let mut written = Vec::new();
    let count = masks.dim(0)?;
    let mut best = (0, f32::NEG_INFINITY);
    let iou = pred.iou.flatten_all()?.to_vec1::<f32>()?;
    for (k, &score) in iou.iter().enumerate().take(count) {
        let name = if count == 1 { "mask.png".to_string() } else { format!("mask_{k}.png") };
        let path = req.out.join(name);
        write_mask(&masks.get(k)?, &path)?;
        written.push(path);
        if score > best.1 {
            best = (k, score);
        }
    }
    let overlay = req.out.join("overlay.png");
    write_overlay(&image, &masks.get(best.0)?, req, &overlay)?;
    written.push(overlay);
    let logits = req.out.join("logits.safetensors");
    let tensors = HashMap::from([("masks".to_string(), masks), ("low_res".to_string(), pred.low_res), ("iou".to_string(), pred.iou)]);
    flmm_nn::params::save_tensors(&tensors, &logits)?;
    written.push(logits);
    Ok(written)
}

/// Logits `[H, W]` → a black/white PNG (white where logit > 0).
fn write_mask(logits: &Tensor, path: &Path) -> anyhow::Result<()> {
    let (h, w) = logits.dims2()?;
    let v = logits.flatten_all()?.to_vec1::<f32>()?;
    let img = image::GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([if v[y as usize * w + x as usize] > 0.0 { 255 } else { 0 }]));
    crate::png_out::save_png(&image::DynamicImage::ImageLuma8(img), path)
}

/// The photo with the mask tinted, and the prompts drawn.
fn write_overlay(image: &RgbImage, logits: &Tensor, req: &SamRequest, path: &Path) -> anyhow::Result<()> {
    let (_, w) = logits.dims2()?;
    let v = logits.flatten_all()?.to_vec1::<f32>()?;
    let mut out = image.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if v[y as usize * w + x as usize] > 0.0 {
            let Rgb(c) = *p;
            *p = Rgb([((c[0] as u16 + 30) / 2) as u8, ((c[1] as u16 + 144) / 2) as u8, ((c[2] as u16 + 255) / 2) as u8]);
        }
    }
    let (iw, ih) = out.dimensions();
    let mut put = |x: i64, y: i64, c: Rgb<u8>| {
        if x >= 0 && y >= 0 && (x as u32) < iw && (y as u32) < ih {
            out.put_pixel(x as u32, y as u32, c);
        }
    };
    if let Some([x0, y0, x1, y1]) = req.bbox {
        let (x0, y0, x1, y1) = (x0 as i64, y0 as i64, x1 as i64 - 1, y1 as i64 - 1);
        for x in x0..=x1 {
            put(x, y0, Rgb([0, 255, 0]));
            put(x, y1, Rgb([0, 255, 0]));
        }
        for y in y0..=y1 {
            put(x0, y, Rgb([0, 255, 0]));
            put(x1, y, Rgb([0, 255, 0]));
        }
    }
    for &(x, y, label) in &req.points {
        let colour = if label == 1 { Rgb([0, 255, 0]) } else { Rgb([255, 0, 0]) };
        for dy in -3..=3 {
            for dx in -3..=3 {
                if dx * dx + dy * dy <= 9 {
                    put(x as i64 + dx, y as i64 + dy, colour);
                }
            }
        }
    }
    crate::png_out::save_png(&image::DynamicImage::ImageRgb8(out), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_parse_or_explain() {
        assert_eq!(parse_point("10,20").unwrap(), (10.0, 20.0, 1));
        assert_eq!(parse_point("10, 20, 0").unwrap(), (10.0, 20.0, 0));
        assert!(parse_point("10").unwrap_err().contains("x,y"));
        assert!(parse_point("1,2,5").unwrap_err().contains("label"));
        assert_eq!(parse_box("1,2,30,40").unwrap(), [1.0, 2.0, 30.0, 40.0]);
        assert!(parse_box("30,2,1,40").unwrap_err().contains("x0 < x1"));
        assert!(parse_box("a,b,c,d").is_err());
    }
}
