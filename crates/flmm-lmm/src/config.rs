//! `config.json` of a Hugging Face LLaVA / LLaVA-NeXT directory, resolved against the defaults of the
//! transformers config classes (llava-hf configs only list the values that differ from those defaults).

use std::path::Path;

use serde::Deserialize;

use crate::error::{LmmError, Result};

/// The multimodal families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `LlavaForConditionalGeneration`: one square image, one grid of image tokens.
    Llava15,
    /// `LlavaNextForConditionalGeneration`: anyres tiles, coarse + fine image tokens.
    LlavaNext,
}

impl Family {
    /// The `architectures` names in `config.json` this crate accepts.
    pub const ARCHITECTURES: [&'static str; 2] =
        ["LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration"];

    /// Human-readable family name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llava15 => "LLaVA-1.5",
            Family::LlavaNext => "LLaVA-NeXT",
        }
    }
}

/// The decoder flavour of the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderKind {
    /// LLaMA / Vicuna.
    Llama,
    /// Mistral (optional sliding-window attention).
    Mistral,
}

/// Activation functions that appear in these configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, transformers' `"gelu"`.
    Gelu,
    /// tanh-approximated GELU (`"gelu_pytorch_tanh"`, `"gelu_new"`).
    GeluTanh,
    /// `x * sigmoid(1.702 x)`, CLIP's `"quick_gelu"`.
    QuickGelu,
    /// `x * sigmoid(x)`, `"silu"`.
    Silu,
}

impl Activation {
    /// The transformers name of the activation.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
            Activation::QuickGelu => "quick_gelu",
            Activation::Silu => "silu",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
    }
}

/// CLIP vision tower hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Embedding width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels (square).
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per side of one tile.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// Decoder (language model) hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// LLaMA or Mistral.
    pub kind: DecoderKind,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers L.
    pub num_hidden_layers: usize,
    /// Query heads H.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest supported sequence.
    pub max_position_embeddings: usize,
    /// Mistral's sliding attention window, if any: keys `j` with `0 ≤ i - j ≤ w` are visible.
    pub sliding_window: Option<usize>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<u32>,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A resolved LLaVA / LLaVA-NeXT configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    /// Which family.
    pub family: Family,
    /// Vision tower.
    pub vision: VisionConfig,
    /// Language model.
    pub text: TextConfig,
    /// Token id of `<image>` in the prompt.
    pub image_token_index: u32,
    /// Activation between the projector's two linears.
    pub projector_act: Activation,
    /// Which vision hidden state feeds the projector (negative counts from the end, as in Python).
    pub vision_feature_layer: i64,
    /// `true` drops the CLS token ("default"); `false` keeps it ("full").
    pub drop_cls: bool,
    /// LLaVA-NeXT anyres resolutions as `[height, width]`.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// The dtype the weights were saved in (`torch_dtype`), if stated.
    pub torch_dtype: Option<String>,
}

#[derive(Deserialize)]
struct RawTop {
    #[serde(default)]
    architectures: Vec<String>,
    vision_config: Option<RawVision>,
    text_config: Option<RawText>,
    image_token_index: Option<u32>,
    projector_hidden_act: Option<String>,
    vision_feature_layer: Option<serde_json::Value>,
    vision_feature_select_strategy: Option<String>,
    image_grid_pinpoints: Option<Vec<[usize; 2]>>,
    torch_dtype: Option<String>,
    tie_word_embeddings: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawVision {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

#[derive(Deserialize, Default)]
struct RawText {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    max_position_embeddings: Option<usize>,
    #[serde(default, deserialize_with = "nullable")]
    sliding_window: Option<Option<usize>>,
    eos_token_id: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
}

/// Distinguishes "absent" (outer None) from "null" (Some(None)).
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

fn first_id(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first().and_then(first_id),
        _ => None,
    }
}

impl LlavaConfig {
    /// A LLaVA-1.5 configuration of the kind [`crate::trainable::TrainableLlava`] trains: the `<image>`
    /// token right after the text vocabulary, the GELU projector over the last vision layer, CLS dropped.
    pub fn llava15(vision: VisionConfig, text: TextConfig) -> Self {
        Self {
            family: Family::Llava15,
            image_token_index: text.vocab_size as u32,
            vision,
            text,
            projector_act: Activation::Gelu,
            vision_feature_layer: -1,
            drop_cls: true,
            image_grid_pinpoints: vec![],
            torch_dtype: None,
        }
    }

    /// Reads and resolves `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |message: String| LmmError::BadFile { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let raw: RawTop = serde_json::from_str(&text).map_err(|e| bad(format!("not a valid config.json: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let family = if raw.architectures.iter().any(|a| a == "LlavaNextForConditionalGeneration") {
            Family::LlavaNext
        } else if raw.architectures.iter().any(|a| a == "LlavaForConditionalGeneration") {
            Family::Llava15
        } else {
            return Err(LmmError::UnsupportedArchitecture {
                dir,
                found: raw.architectures,
                expected: Family::ARCHITECTURES.iter().map(|s| s.to_string()).collect(),
            });
        };
        let vision = resolve_vision(raw.vision_config).map_err(bad)?;
        let text = resolve_text(raw.text_config.unwrap_or_default(), raw.tie_word_embeddings).map_err(bad)?;
        let projector_act = match raw.projector_hidden_act.as_deref() {
            None => Activation::Gelu,
            Some(name) => Activation::parse(name).ok_or_else(|| bad(format!("unknown projector_hidden_act {name:?}")))?,
        };
        let vision_feature_layer = match raw.vision_feature_layer {
            None => -2,
            Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| bad("vision_feature_layer must be an integer".into()))?,
            Some(other) => return Err(bad(format!("vision_feature_layer {other} is not supported (one integer expected)"))),
        };
        let drop_cls = match raw.vision_feature_select_strategy.as_deref().unwrap_or("default") {
            "default" => true,
            "full" => false,
            other => return Err(bad(format!("unknown vision_feature_select_strategy {other:?}"))),
        };
        let image_grid_pinpoints = raw
            .image_grid_pinpoints
            .unwrap_or_else(|| vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]);
        let config = LlavaConfig {
            family,
            vision,
            text,
            image_token_index: raw.image_token_index.unwrap_or(32000),
            projector_act,
            vision_feature_layer,
            drop_cls,
            image_grid_pinpoints,
            torch_dtype: raw.torch_dtype,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// The configuration as a transformers `config.json` with every value written out (no reliance on
    /// class defaults), so [`LlavaConfig::from_file`] reads back exactly this configuration.
    pub fn to_json(&self) -> serde_json::Value {
        let v = &self.vision;
        let t = &self.text;
        let (architecture, model_type) = match self.family {
            Family::Llava15 => ("LlavaForConditionalGeneration", "llava"),
            Family::LlavaNext => ("LlavaNextForConditionalGeneration", "llava_next"),
        };
        let mut json = serde_json::json!({
            "architectures": [architecture],
            "model_type": model_type,
            "image_token_index": self.image_token_index,
            "projector_hidden_act": self.projector_act.name(),
            "vision_feature_layer": self.vision_feature_layer,
            "vision_feature_select_strategy": if self.drop_cls { "default" } else { "full" },
            "tie_word_embeddings": t.tie_word_embeddings,
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers,
                "num_attention_heads": v.num_attention_heads,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "hidden_act": v.hidden_act.name(),
                "layer_norm_eps": v.layer_norm_eps,
            },
            "text_config": {
                "model_type": match t.kind { DecoderKind::Llama => "llama", DecoderKind::Mistral => "mistral" },
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "rms_norm_eps": t.rms_norm_eps,
                "rope_theta": t.rope_theta,
                "max_position_embeddings": t.max_position_embeddings,
                "sliding_window": t.sliding_window,
                "eos_token_id": t.eos_token_id,
                "tie_word_embeddings": t.tie_word_embeddings,
                "hidden_act": "silu",
            },
        });
        json["image_grid_pinpoints"] = serde_json::json!(self.image_grid_pinpoints);
        if let Some(dtype) = &self.torch_dtype {
            json["torch_dtype"] = serde_json::json!(dtype);
        }
        json
    }

    /// Number of vision blocks to run so that the output is hidden state `vision_feature_layer`
    /// (index 0 = embeddings after `pre_layrnorm`).
    pub fn vision_layers_to_run(&self) -> usize {
        let n = self.vision.num_hidden_layers as i64 + 1;
        self.vision_feature_layer.rem_euclid(n) as usize
    }

    /// Channels of one attention stack: L·H, doubled for coarse + fine (LLaVA-NeXT).
    pub fn attention_channels(&self) -> usize {
        let lh = self.text.num_hidden_layers * self.text.num_attention_heads;
        match self.family {
            Family::Llava15 => lh,
            Family::LlavaNext => 2 * lh,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let v = &self.vision;
        let t = &self.text;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!("vision image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(format!("vision hidden_size {} not divisible by {} heads", v.hidden_size, v.num_attention_heads));
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(format!("text hidden_size {} not divisible by {} heads", t.hidden_size, t.num_attention_heads));
        }
        if t.num_key_value_heads == 0 || !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(format!(
                "text num_attention_heads {} not a multiple of num_key_value_heads {}",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if !t.head_dim().is_multiple_of(2) {
            return Err(format!("text head_dim {} must be even for rotary embeddings", t.head_dim()));
        }
        if self.vision_layers_to_run() == 0 {
            return Err(format!("vision_feature_layer {} selects the embeddings, not a block output", self.vision_feature_layer));
        }
        Ok(())
    }
}

/// transformers' `CLIPVisionConfig` as LlavaConfig builds it when `vision_config` is absent.
fn resolve_vision(raw: Option<RawVision>) -> std::result::Result<VisionConfig, String> {
    let absent = raw.is_none();
    let r = raw.unwrap_or_default();
    // LlavaConfig's fallback tower is CLIP-L/14-336; CLIPVisionConfig's own class defaults are ViT-B/32-224.
    let (hidden, inter, layers, heads, image, patch) =
        if absent { (1024, 4096, 24, 16, 336, 14) } else { (768, 3072, 12, 12, 224, 32) };
    let act = r.hidden_act.as_deref().unwrap_or("quick_gelu");
    Ok(VisionConfig {
        hidden_size: r.hidden_size.unwrap_or(hidden),
        intermediate_size: r.intermediate_size.unwrap_or(inter),
        num_hidden_layers: r.num_hidden_layers.unwrap_or(layers),
        num_attention_heads: r.num_attention_heads.unwrap_or(heads),
        image_size: r.image_size.unwrap_or(image),
        patch_size: r.patch_size.unwrap_or(patch),
        hidden_act: Activation::parse(act).ok_or_else(|| format!("unknown vision hidden_act {act:?}"))?,
        layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-5),
    })
}

/// transformers' `LlamaConfig` / `MistralConfig` defaults for the keys a config omits.
fn resolve_text(r: RawText, top_tie: Option<bool>) -> std::result::Result<TextConfig, String> {
    let kind = match r.model_type.as_deref().unwrap_or("llama") {
        "llama" => DecoderKind::Llama,
        "mistral" => DecoderKind::Mistral,
        other => return Err(format!("text_config.model_type {other:?} is not supported (llama, mistral)")),
    };
    if let Some(scaling) = r.rope_scaling.as_ref().filter(|v| !v.is_null()) {
        return Err(format!("rope_scaling {scaling} is not supported"));
    }
    if let Some(act) = r.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(format!("text hidden_act {act:?} is not supported (silu)"));
    }
    let (inter, kv_default, eps, max_pos, window) = match kind {
        DecoderKind::Llama => (11008, None, 1e-6, 2048, None),
        DecoderKind::Mistral => (14336, Some(8), 1e-6, 4096 * 32, Some(4096)),
    };
    let heads = r.num_attention_heads.unwrap_or(32);
    Ok(TextConfig {
        kind,
        vocab_size: r.vocab_size.unwrap_or(32000),
        hidden_size: r.hidden_size.unwrap_or(4096),
        intermediate_size: r.intermediate_size.unwrap_or(inter),
        num_hidden_layers: r.num_hidden_layers.unwrap_or(32),
        num_attention_heads: heads,
        num_key_value_heads: r.num_key_value_heads.or(kv_default).unwrap_or(heads),
        rms_norm_eps: r.rms_norm_eps.unwrap_or(eps),
        rope_theta: r.rope_theta.unwrap_or(10000.0),
        max_position_embeddings: r.max_position_embeddings.unwrap_or(max_pos),
        sliding_window: match r.sliding_window {
            None => window,
            Some(w) => w,
        },
        eos_token_id: r.eos_token_id.as_ref().and_then(first_id).or(Some(2)),
        tie_word_embeddings: r.tie_word_embeddings.or(top_tie).unwrap_or(false),
    })
}
