//! The toy world's vision-language model: its size, the model directory it lives in, the pretraining
//! task (captioning and question answering on toy scenes — no mask ever reaches it) and its
//! question-answering accuracy.

use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Tensor};
use flmm_data::toy::{conversation, render, vocabulary, ToyScene};
use flmm_lmm::config::{Activation, DecoderKind, LlavaConfig, TextConfig, VisionConfig};
use flmm_lmm::processor::{process_llava15, ProcessorConfig};
use flmm_lmm::prompt::{Template, DEFAULT_IMAGE_PROMPT};
use flmm_lmm::tokenizer::{write_word_level, TextTokenizer, WORD_LEVEL_SPECIALS};
use flmm_lmm::trainable::{tokenize_conversation, Conversation, TrainableLlava};
use flmm_nn::params::ParamStore;
use std::collections::BTreeMap;

use crate::train::task::{SampleLoss, TrainTask};

/// Side of toy scenes and of the toy VLM's input.
pub const TOY_IMAGE_SIZE: usize = 128;
/// Question turns per pretraining conversation (after the description turn).
pub const QUESTIONS_PER_CONVERSATION: usize = 12;

/// The toy tokenizer's words: every toy text and the Vicuna chat template with F-LMM's image prompt.
pub fn toy_words() -> Vec<String> {
    let prompt = Template::Vicuna.instruction(&DEFAULT_IMAGE_PROMPT.replace("<image>", ""));
    vocabulary(&[&prompt])
}

/// The toy VLM: a CLIP-style ViT (patch 8 → 16×16 image tokens, 2 blocks of width 64), the mlp2x_gelu
/// projector and a 4-layer LLaMA decoder of width 128 with 4 heads (16 attention channels per phrase).
pub fn toy_vlm_config(vocab_size: usize) -> LlavaConfig {
    LlavaConfig::llava15(
        VisionConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            image_size: TOY_IMAGE_SIZE,
            patch_size: 8,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        TextConfig {
            kind: DecoderKind::Llama,
            vocab_size,
            hidden_size: 128,
            intermediate_size: 384,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 1024,
            sliding_window: None,
            eos_token_id: Some(2),
            tie_word_embeddings: false,
        },
    )
}

/// Writes a complete model directory: `model`'s weights stored as `dtype`, `config.json`, the toy
/// `tokenizer.json` and the CLIP `preprocessor_config.json`.
pub fn save_vlm_dir(model: &TrainableLlava, dir: &Path, dtype: DType) -> anyhow::Result<()> {
    model.save(dir, dtype)?;
    write_word_level(&dir.join("tokenizer.json"), &toy_words(), "<image>")?;
    let processor = serde_json::to_string_pretty(&ProcessorConfig::clip(TOY_IMAGE_SIZE as u32).to_json())?;
    flmm_nn::fsutil::write_atomic(&dir.join("preprocessor_config.json"), processor.as_bytes())
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// A freshly initialized toy VLM (deterministic from `seed`) saved in f32 to `dir`.
pub fn init_vlm_dir(dir: &Path, seed: u64) -> anyhow::Result<()> {
    let vocab = WORD_LEVEL_SPECIALS.len() + toy_words().len();
    let model = TrainableLlava::init(&toy_vlm_config(vocab), seed, DType::F32)?;
    save_vlm_dir(&model, dir, DType::F32)
}

/// A toy VLM with its tokenizer and image processor, ready to train or score.
pub struct ToyVlm {
    /// The model.
    pub model: TrainableLlava,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Its image processor settings.
    pub processor: ProcessorConfig,
}

impl ToyVlm {
    /// Loads the model directory `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            model: TrainableLlava::load(dir)?,
            tokenizer: TextTokenizer::from_file(&dir.join("tokenizer.json"))?,
            processor: ProcessorConfig::from_file(dir.join("preprocessor_config.json"))?,
        })
    }

    /// Pixel values `[1, 3, S, S]` of a scene.
    pub fn pixels(&self, scene: &ToyScene) -> anyhow::Result<Tensor> {
        Ok(process_llava15(&render(scene), &self.processor)?.pixel_values)
    }

    /// The tokenized pretraining conversation `variant` about `scene`.
    pub fn conversation(&self, scene: &ToyScene, variant: u64) -> anyhow::Result<Conversation> {
        let turns = conversation(scene, DEFAULT_IMAGE_PROMPT, variant, QUESTIONS_PER_CONVERSATION);
        Ok(tokenize_conversation(&self.tokenizer, Template::Vicuna, &turns)?)
    }
}

/// Pretraining: sample `i` is conversation variant `variant_seed + i` about scene `i`.
pub struct VlmTask {
    /// The model being trained, with tokenizer and processor.
    pub vlm: ToyVlm,
    /// Training scenes.
    pub scenes: Vec<ToyScene>,
    /// Offset of the conversation variants.
    pub variant_seed: u64,
}

impl TrainTask for VlmTask {
    fn params(&self) -> &ParamStore {
        self.vlm.model.params()
    }

    fn len(&self) -> usize {
        self.scenes.len()
    }

    fn sample_loss(&self, index: usize, _dtype: DType) -> candle_core::Result<SampleLoss> {
        let err = |e: anyhow::Error| candle_core::Error::Msg(format!("{e:#}"));
        let scene = &self.scenes[index];
        let pixels = self.vlm.pixels(scene).map_err(err)?;
        let conv = self.vlm.conversation(scene, self.variant_seed + index as u64).map_err(err)?;
        let out = self.vlm.model.loss(&pixels, &conv).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut logs = BTreeMap::new();
        logs.insert("token_accuracy".into(), out.correct() as f64 / out.tokens as f64);
        Ok(SampleLoss { loss: out.loss, logs })
    }

    fn export(&self, dir: &Path) -> anyhow::Result<()> {
        save_vlm_dir(&self.vlm.model, &dir.join("vlm"), DType::F32)
    }
}
