//! `ProcessorConfig`: the image-processor settings of a Hugging Face `preprocessor_config.json`
//! (CLIPImageProcessor for LLaVA-1.5, LlavaNextImageProcessor for LLaVA-NeXT).

use std::path::Path;

use flmm_data::resample::Filter;
use serde_json::Value;

use super::error::{ProcessorError, Result};

/// The `size` / `crop_size` entry of a preprocessor config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// `{"shortest_edge": s}` (or a bare integer `s` for `size`).
    ShortestEdge(u32),
    /// `{"height": h, "width": w}` (or a bare integer `s` for `crop_size`, meaning `s`×`s`).
    HeightWidth {
        /// Target height.
        height: u32,
        /// Target width.
        width: u32,
    },
}

/// The settings the LLaVA-1.5 / LLaVA-NeXT processors use, parsed from `preprocessor_config.json`.
/// Unknown keys are ignored; missing optional keys take Hugging Face's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Per-channel mean (RGB), as written in the file (f64; cast to f32 when normalising, as HF does).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (RGB).
    pub image_std: [f64; 3],
    /// `size`: the resize target (LLaVA-1.5: longest side → `shortest_edge`; NeXT: base image side).
    pub size: SizeSpec,
    /// `crop_size`: the LLaVA-NeXT patch size (`height`); unused by LLaVA-1.5 (F-LMM skips the crop).
    pub crop_size: Option<SizeSpec>,
    /// `image_grid_pinpoints`: LLaVA-NeXT candidate resolutions, each `[height, width]`.
    pub image_grid_pinpoints: Option<Vec<[u32; 2]>>,
    /// `resample`: the PIL filter (default BICUBIC).
    pub resample: Filter,
    /// `do_rescale` (default true).
    pub do_rescale: bool,
    /// `rescale_factor` (default 1/255).
    pub rescale_factor: f64,
    /// `do_normalize` (default true).
    pub do_normalize: bool,
}

impl ProcessorConfig {
    /// Read and parse a `preprocessor_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProcessorError::ConfigIo { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parse the JSON text of a preprocessor config; `source_name` names it in errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let err = |message: String| ProcessorError::Config { source_name: source_name.to_string(), message };
        let v: Value = serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| err("expected a JSON object".into()))?;

        let triple = |key: &str| -> Result<[f64; 3]> {
            let arr = obj.get(key).ok_or_else(|| err(format!("missing `{key}` (3 per-channel floats)")))?;
            let vals: Option<Vec<f64>> = match arr {
                Value::Array(a) => a.iter().map(Value::as_f64).collect(),
                Value::Number(n) => n.as_f64().map(|x| vec![x; 3]),
                _ => None,
            };
            match vals.as_deref() {
                Some(&[a, b, c]) => Ok([a, b, c]),
                _ => Err(err(format!("`{key}` must be a number or a list of 3 numbers, got {arr}"))),
            }
        };
        let image_mean = triple("image_mean")?;
        let image_std = triple("image_std")?;
        if image_std.iter().any(|s| !s.is_finite() || *s == 0.0) || image_mean.iter().any(|m| !m.is_finite()) {
            return Err(err(format!(
                "`image_std` must be finite and non-zero, `image_mean` finite; got {image_std:?}, {image_mean:?}"
            )));
        }

        let size = parse_size(obj.get("size"), "size", true)
            .map_err(err)?
            .ok_or_else(|| err("missing `size` ({\"shortest_edge\": S} or {\"height\": H, \"width\": W})".into()))?;
        let crop_size = parse_size(obj.get("crop_size"), "crop_size", false).map_err(err)?;

        let image_grid_pinpoints = match obj.get("image_grid_pinpoints") {
            None | Some(Value::Null) => None,
            Some(p) => Some(parse_pinpoints(p).map_err(err)?),
        };

        let resample = match obj.get("resample") {
            None | Some(Value::Null) => Filter::Bicubic,
            Some(r) => {
                let id =
                    r.as_i64().ok_or_else(|| err(format!("`resample` must be an integer PIL filter id, got {r}")))?;
                Filter::from_pil_id(id).ok_or_else(|| {
                    err(format!(
                        "`resample` = {id} is not supported; expected 0 (nearest), 2 (bilinear) or 3 (bicubic)"
                    ))
                })?
            }
        };
        let flag = |key: &str| -> Result<bool> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(true),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(err(format!("`{key}` must be true or false, got {other}"))),
            }
        };
        let rescale_factor = match obj.get("rescale_factor") {
            None | Some(Value::Null) => 1.0 / 255.0,
            Some(r) => r
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| err(format!("`rescale_factor` must be a number, got {r}")))?,
        };
        Ok(ProcessorConfig {
            image_mean,
            image_std,
            size,
            crop_size,
            image_grid_pinpoints,
            resample,
            do_rescale: flag("do_rescale")?,
            rescale_factor,
            do_normalize: flag("do_normalize")?,
        })
    }

    /// CLIP statistics and `shortest_edge = size`, bicubic: the LLaVA-1.5 / llava-hf processor settings.
    pub fn clip(size: u32) -> Self {
        ProcessorConfig {
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
            size: SizeSpec::ShortestEdge(size),
            crop_size: Some(SizeSpec::HeightWidth { height: size, width: size }),
            image_grid_pinpoints: None,
            resample: Filter::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }

    /// The settings as a `preprocessor_config.json` (`CLIPImageProcessor`), read back identically by
    /// [`ProcessorConfig::from_json_str`].
    pub fn to_json(&self) -> Value {
        let size = |s: &SizeSpec| match *s {
            SizeSpec::ShortestEdge(e) => serde_json::json!({ "shortest_edge": e }),
            SizeSpec::HeightWidth { height, width } => serde_json::json!({ "height": height, "width": width }),
        };
        let mut json = serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "size": size(&self.size),
            "resample": self.resample.pil_id(),
            "do_resize": true,
            "do_center_crop": self.crop_size.is_some(),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "do_convert_rgb": true,
        });
        if let Some(crop) = &self.crop_size {
            json["crop_size"] = size(crop);
        }
        if let Some(p) = &self.image_grid_pinpoints {
            json["image_grid_pinpoints"] = serde_json::json!(p);
        }
        json
    }
}

fn positive(v: &Value, what: &str) -> std::result::Result<u32, String> {
    v.as_u64()
        .filter(|&x| x > 0 && x <= u32::MAX as u64)
        .map(|x| x as u32)
        .ok_or_else(|| format!("{what} must be a positive integer, got {v}"))
}

/// `size`: a bare int means shortest edge; `crop_size`: a bare int means a square.
fn parse_size(
    v: Option<&Value>,
    key: &str,
    int_is_shortest_edge: bool,
) -> std::result::Result<Option<SizeSpec>, String> {
    let v = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    if v.is_number() {
        let s = positive(v, &format!("`{key}`"))?;
        return Ok(Some(if int_is_shortest_edge {
            SizeSpec::ShortestEdge(s)
        } else {
            SizeSpec::HeightWidth { height: s, width: s }
        }));
    }
    let obj = v.as_object().ok_or_else(|| format!("`{key}` must be an integer or an object, got {v}"))?;
    if let Some(s) = obj.get("shortest_edge") {
        return Ok(Some(SizeSpec::ShortestEdge(positive(s, &format!("`{key}.shortest_edge`"))?)));
    }
    match (obj.get("height"), obj.get("width")) {
        (Some(h), Some(w)) => Ok(Some(SizeSpec::HeightWidth {
            height: positive(h, &format!("`{key}.height`"))?,
            width: positive(w, &format!("`{key}.width`"))?,
        })),
        _ => Err(format!("`{key}` must contain `shortest_edge` or both `height` and `width`, got {v}")),
    }
}

fn parse_pinpoints(v: &Value) -> std::result::Result<Vec<[u32; 2]>, String> {
    let bad = || format!("`image_grid_pinpoints` must be a non-empty list of [height, width] pairs, got {v}");
    let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
    list.iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([h, w]) => Ok([positive(h, "a pinpoint height")?, positive(w, "a pinpoint width")?]),
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llava_next_style_config() {
        let cfg = ProcessorConfig::from_json_str(
            r#"{"crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_grid_pinpoints": [[336, 672], [672, 336]], "resample": 3, "do_center_crop": true}"#,
            "t",
        )
        .unwrap();
        assert_eq!(cfg.size, SizeSpec::ShortestEdge(336));
        assert_eq!(cfg.crop_size, Some(SizeSpec::HeightWidth { height: 336, width: 336 }));
        assert_eq!(cfg.image_grid_pinpoints, Some(vec![[336, 672], [672, 336]]));
        assert_eq!(cfg.resample, Filter::Bicubic);
        assert!(cfg.do_rescale && cfg.do_normalize);
        assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
    }

    #[test]
    fn old_style_integer_sizes() {
        let cfg = ProcessorConfig::from_json_str(
            r#"{"size": 224, "crop_size": 224, "image_mean": 0.5, "image_std": [0.5, 0.5, 0.5]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(cfg.size, SizeSpec::ShortestEdge(224));
        assert_eq!(cfg.crop_size, Some(SizeSpec::HeightWidth { height: 224, width: 224 }));
        assert_eq!(cfg.image_mean, [0.5; 3]);
    }

    #[test]
    fn clear_errors() {
        let e = |s: &str| ProcessorConfig::from_json_str(s, "cfg.json").unwrap_err().to_string();
        assert!(e("not json").contains("not valid JSON"));
        assert!(e(r#"{"size": 336, "image_std": [1,1,1]}"#).contains("missing `image_mean`"));
        let m = e(r#"{"size": 336, "image_mean": [0,0], "image_std": [1,1,1]}"#);
        assert!(m.contains("`image_mean`") && m.contains("cfg.json"), "{m}");
        assert!(e(r#"{"size": 336, "image_mean": [0,0,0], "image_std": [1,0,1]}"#).contains("non-zero"));
        assert!(e(r#"{"image_mean": [0,0,0], "image_std": [1,1,1]}"#).contains("missing `size`"));
        assert!(e(r#"{"size": {"foo": 1}, "image_mean": [0,0,0], "image_std": [1,1,1]}"#).contains("shortest_edge"));
        assert!(
            e(r#"{"size": 336, "image_mean": [0,0,0], "image_std": [1,1,1], "resample": 1}"#).contains("not supported")
        );
        assert!(e(r#"{"size": 336, "image_mean": [0,0,0], "image_std": [1,1,1], "image_grid_pinpoints": [[1]]}"#)
            .contains("[height, width]"));
        assert!(e(r#"{"size": -3, "image_mean": [0,0,0], "image_std": [1,1,1]}"#).contains("positive integer"));
    }
}
