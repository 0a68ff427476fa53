//! `flmm ground`: image + text + phrases → one mask per phrase, through the whole F-LMM pipeline:
//! frozen backbone pass (attention stacks + phrase hidden states) → U-Net → crop to the image →
//! SAM refiner prompted with box, mask and text tokens. Writes mask PNGs, an overlay, a JSON with
//! phrase, score, box and COCO RLE per phrase, and optionally the logits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use flmm_data::coco_mask::{Mask, Rle};
use flmm_head::sam::cache::EmbeddingCache;
use flmm_head::sam::preprocess::preprocess;
use flmm_head::sam::Sam;
use flmm_head::{GroundingHead, UNetConfig};
use flmm_lmm::backbone::Backbone;
use flmm_lmm::capture::Capture;
use flmm_lmm::llava::ImageLayout;
use image::{Rgb, RgbImage};
use serde::Serialize;

/// A `flmm ground` request.
pub struct GroundRequest {
    /// Backbone model directory.
    pub model: PathBuf,
    /// Head file (official keys; `flmm import` converts released `.pth` heads).
    pub head: PathBuf,
    /// SAM checkpoint providing the image encoder.
    pub sam: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Text containing the phrases.
    pub text: String,
    /// Spans of the text to ground, in order.
    pub phrases: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Also write the U-Net and refiner logits.
    pub save_logits: bool,
    /// SAM embedding cache directory.
    pub cache: Option<PathBuf>,
    /// Backbone compute dtype.
    pub dtype: DType,
    /// Device.
    pub device: Device,
}

/// One grounded phrase in `result.json`.
#[derive(Debug, Serialize)]
pub struct GroundedPhrase {
    /// The phrase.
    pub phrase: String,
    /// Mean foreground probability over the mask (0 when the mask is empty).
    pub score: f64,
    /// `[x0, y0, x1, y1]` of the mask (exclusive ends), `null` when empty.
    pub bbox: Option<[u32; 4]>,
    /// Mask pixels.
    pub area: u64,
    /// COCO RLE `{size: [h, w], counts}` of the mask.
    pub rle: serde_json::Value,
    /// The mask PNG.
    pub mask: String,
}

/// Runs the pipeline; returns the written paths.
pub fn run(req: &GroundRequest) -> anyhow::Result<Vec<PathBuf>> {
    let image = flmm_data::image_io::load_rgb_image(&req.image)?;
    let backbone = Backbone::open(&req.model, req.dtype, &req.device)?;
    let prepared = backbone.prepare(&image, &req.text, &req.phrases)?;
    let head = load_head(&backbone, &req.head, &req.sam)?;
    let features = backbone.features(&prepared, &Capture::default())?;
    let logits = head.unet_logits(&features.attention)?;
    let logits = match features.layout {
        // LLaVA-1.5's grid covers the padded square: keep the image part (spec §2.1).
        ImageLayout::Grid { .. } => features.geometry.crop_to_unpadded(&logits)?,
        // LLaVA-NeXT's fine grid is already un-padded.
        ImageLayout::CoarseFine { .. } => logits,
    };
    let tokens: Vec<Tensor> = features.phrase_hidden.iter().map(|h| head.text_tokens(h)).collect::<Result<_, _>>()?;
    let cpu = Device::Cpu;
    let (embedding, geometry) = match &req.cache {
        Some(dir) => {
            let e = EmbeddingCache::new(dir, &head.sam).get_or_compute(&head.sam, &image, &cpu)?;
            (e.embedding, e.geometry)
        }
        None => {
            let (x, g) = preprocess(&image, head.sam.image_encoder.input_size(), &cpu)?;
            (head.sam.image_encoder.forward(&x)?, g)
        }
    };
    let refined = head.refine(&embedding, &geometry, &logits.to_device(&cpu)?, &tokens)?;
    write_outputs(req, &image, &logits, &refined)
}

/// Builds the head for `backbone`: U-Net channels from the backbone, base width from the head file.
fn load_head(backbone: &Backbone, head_path: &Path, sam_path: &Path) -> anyhow::Result<GroundingHead> {
    let file = candle_core::safetensors::load(head_path, &Device::Cpu).with_context(|| format!("reading the head {}", head_path.display()))?;
    let first = "mask_head.encoder.0.0.convs.0.conv.weight";
    let Some(w) = file.get(first) else {
        bail!("{} is not an F-LMM head: no {first} (convert released .pth heads with `flmm import`)", head_path.display());
    };
    let channels = backbone.config.attention_channels();
    if w.dim(1)? != channels {
        bail!("{}: the U-Net takes {} attention channels but {} gives {channels}; was it trained on another backbone?", head_path.display(), w.dim(1)?, backbone.dir.root.display());
    }
    let unet = UNetConfig { in_channels: channels, base_channels: w.dim(0)?, ..Default::default() };
    let sam = Sam::load_file(sam_path)?;
    let t = &backbone.config.text;
    let head = GroundingHead::new(unet, sam, t.num_hidden_layers, t.hidden_size, 0, &Device::Cpu)?;
    let unused = head.load(head_path)?;
    if !unused.is_empty() {
        eprintln!("note: {} keys of the head file are not used: {}", unused.len(), unused.join(", "));
    }
    Ok(head)
}

fn write_outputs(req: &GroundRequest, image: &RgbImage, unet: &Tensor, refined: &Tensor) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let (n, h, w) = refined.dims3()?;
    let probs = flmm_nn::act::sigmoid(&refined.to_dtype(DType::F32)?)?;
    let mut written = Vec::new();
    let mut results = Vec::with_capacity(n);
    let mut overlay = image.clone();
    for k in 0..n {
        let p = probs.get(k)?.flatten_all()?.to_vec1::<f32>()?;
        let data: Vec<u8> = p.iter().map(|&v| u8::from(v > 0.5)).collect();
        let area = data.iter().map(|&b| b as u64).sum::<u64>();
        let score = if area == 0 { 0.0 } else { p.iter().zip(&data).filter(|(_, &b)| b == 1).map(|(&v, _)| v as f64).sum::<f64>() / area as f64 };
        let mask = Mask { height: h as u32, width: w as u32, data };
        let rle = Rle::encode(&mask);
        let png = req.out.join(format!("mask_{k}.png"));
        let picture = image::GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([mask.data[y as usize * w + x as usize] * 255]));
        crate::png_out::save_png(&image::DynamicImage::ImageLuma8(picture), &png)?;
        tint(&mut overlay, &mask, PALETTE[k % PALETTE.len()]);
        results.push(GroundedPhrase {
            phrase: req.phrases[k].clone(),
            score,
            bbox: mask_box(&mask),
            area,
            rle: serde_json::json!({ "size": [h, w], "counts": rle.to_string() }),
            mask: png.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        });
        written.push(png);
    }
    let overlay_path = req.out.join("overlay.png");
    crate::png_out::save_png(&image::DynamicImage::ImageRgb8(overlay), &overlay_path)?;
    written.push(overlay_path);
    let json = req.out.join("result.json");
    flmm_nn::fsutil::write_atomic(&json, serde_json::to_string_pretty(&serde_json::json!({ "image": req.image, "text": req.text, "phrases": results }))?.as_bytes())?;
    written.push(json);
    if req.save_logits {
        let path = req.out.join("logits.safetensors");
        let tensors = HashMap::from([("unet".to_string(), unet.to_dtype(DType::F32)?), ("refined".to_string(), refined.to_dtype(DType::F32)?)]);
        flmm_nn::params::save_tensors(&tensors, &path)?;
        written.push(path);
    }
    Ok(written)
}

const PALETTE: [[u8; 3]; 6] = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]];

fn tint(img: &mut RgbImage, mask: &Mask, colour: [u8; 3]) {
    for (x, y, p) in img.enumerate_pixels_mut() {
        if mask.data[y as usize * mask.width as usize + x as usize] == 1 {
            let Rgb(c) = *p;
            *p = Rgb(std::array::from_fn(|i| ((c[i] as u16 + colour[i] as u16) / 2) as u8));
        }
    }
}

fn mask_box(mask: &Mask) -> Option<[u32; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..mask.height {
        for x in 0..mask.width {
            if mask.data[(y * mask.width + x) as usize] == 1 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x0 != u32::MAX).then_some([x0, y0, x1, y1])
}
