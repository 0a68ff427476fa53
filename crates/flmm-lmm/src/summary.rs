//! What `flmm inspect-model` reports about a model directory, read from its config and weight headers
//! without loading the weights.

use serde::Serialize;

use crate::config::{DecoderKind, Family, LlavaConfig};
use crate::error::Result;
use crate::model_dir::ModelDir;
use crate::prompt::Template;

/// A model directory described.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The directory.
    pub dir: String,
    /// Family name (LLaVA-1.5, LLaVA-NeXT).
    pub family: String,
    /// Decoder flavour (llama, mistral).
    pub decoder: String,
    /// Decoder layers L.
    pub layers: usize,
    /// Query heads H.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Decoder width d.
    pub hidden_size: usize,
    /// Sliding attention window, if any.
    pub sliding_window: Option<usize>,
    /// Vision tower: blocks used / total, tile size, patch size.
    pub vision: String,
    /// The image token grids the attention maps live on.
    pub image_grids: Vec<String>,
    /// Channels of one attention stack (the U-Net's `in_channels`).
    pub head_in_channels: usize,
    /// Width of the phrase hidden states (`text_proj` input).
    pub text_hidden_size: usize,
    /// Dtype of the stored weights.
    pub stored_dtype: String,
    /// Parameter count.
    pub parameters: usize,
    /// Default prompt template.
    pub template: String,
    /// Id of the `<image>` token.
    pub image_token_id: u32,
    /// Number of weight files.
    pub weight_files: usize,
}

/// The template F-LMM uses for a model.
pub fn default_template(config: &LlavaConfig) -> Template {
    match config.text.kind {
        DecoderKind::Mistral => Template::Mistral,
        DecoderKind::Llama => Template::Vicuna,
    }
}

/// Describes `dir`.
pub fn summarize(dir: &ModelDir, config: &LlavaConfig) -> Result<ModelSummary> {
    let weights = dir.weights(candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let v = &config.vision;
    let g = v.grid();
    let image_grids = match config.family {
        Family::Llava15 => vec![format!("{g}×{g}")],
        Family::LlavaNext => {
            let mut grids = vec![format!("coarse {g}×{g}")];
            for [h, w] in &config.image_grid_pinpoints {
                grids.push(format!(
                    "fine ≤{}×{} (+ newline column) for {h}×{w} px",
                    h / v.image_size * g,
                    w / v.image_size * g
                ));
            }
            grids
        }
    };
    let t = &config.text;
    Ok(ModelSummary {
        dir: dir.root.display().to_string(),
        family: config.family.name().into(),
        decoder: match t.kind {
            DecoderKind::Llama => "llama".into(),
            DecoderKind::Mistral => "mistral".into(),
        },
        layers: t.num_hidden_layers,
        heads: t.num_attention_heads,
        kv_heads: t.num_key_value_heads,
        hidden_size: t.hidden_size,
        sliding_window: t.sliding_window,
        vision: format!(
            "CLIP ViT {} of {} blocks, {}×{} px tiles, patch {}",
            config.vision_layers_to_run(),
            v.num_hidden_layers,
            v.image_size,
            v.image_size,
            v.patch_size
        ),
        image_grids,
        head_in_channels: config.attention_channels(),
        text_hidden_size: t.hidden_size,
        stored_dtype: weights.stored_dtype().unwrap_or_else(|| "?".into()),
        parameters: weights.parameter_count(),
        template: default_template(config).name().into(),
        image_token_id: config.image_token_index,
        weight_files: dir.weight_files.len(),
    })
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model          {}", self.dir)?;
        writeln!(f, "family         {} ({} decoder)", self.family, self.decoder)?;
        writeln!(f, "layers × heads {} × {} ({} key/value heads), hidden {}", self.layers, self.heads, self.kv_heads, self.hidden_size)?;
        if let Some(w) = self.sliding_window {
            writeln!(f, "sliding window {w}")?;
        }
        writeln!(f, "vision         {}", self.vision)?;
        writeln!(f, "image grids    {}", self.image_grids.join("; "))?;
        writeln!(f, "head needs     {} attention channels, text_proj input {}", self.head_in_channels, self.text_hidden_size)?;
        writeln!(f, "weights        {} parameters ({:.2}B), stored as {}, {} file(s)", self.parameters, self.parameters as f64 / 1e9, self.stored_dtype, self.weight_files)?;
        write!(f, "prompt         {} template, image token id {}", self.template, self.image_token_id)
    }
}
