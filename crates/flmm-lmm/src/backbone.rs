//! One loaded backbone with everything around it: tokenizer, image processor, prompt template. It turns
//! `image + text + phrases` into F-LMM's frozen features.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::capture::Capture;
use crate::config::{Family, LlavaConfig};
use crate::error::{LmmError, Result};
use crate::features::attention_maps;
use crate::llava::{Expanded, ImageLayout, LlavaModel, VisionInput};
use crate::model_dir::ModelDir;
use crate::processor::{process_llava15, process_llava_next, ImageGeometry, Processed, ProcessorConfig};
use crate::prompt::{segments_from_phrases, tokenize_segments, Segment, Template, TokenizedText, DEFAULT_IMAGE_PROMPT};
use crate::summary::default_template;
use crate::tokenizer::TextTokenizer;

/// A backbone ready to run.
pub struct Backbone {
    /// The model directory.
    pub dir: ModelDir,
    /// Its configuration.
    pub config: LlavaConfig,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Its image processor settings.
    pub processor: ProcessorConfig,
    /// The chat template used to build prompts.
    pub template: Template,
    /// The image prompt inside the template (contains `<image>`).
    pub image_prompt: String,
    model: LlavaModel,
}

/// A request turned into model inputs.
pub struct Prepared {
    /// Token ids and phrase tags.
    pub text: TokenizedText,
    /// The processed image.
    pub image: Processed,
    /// The decoder input with image tokens spliced in.
    pub expanded: Expanded,
}

/// What one frozen pass yields for N phrases: everything the head needs.
pub struct FrozenFeatures {
    /// `[N, C, h, w]` f32: per phrase the attention stack (C = L·H, or 2·L·H for LLaVA-NeXT).
    pub attention: Tensor,
    /// Per phrase `[n_k, L, d]` f32: hidden states of the phrase's tokens at layers 1..L.
    pub phrase_hidden: Vec<Tensor>,
    /// Image geometry in the processor's frame.
    pub geometry: ImageGeometry,
    /// How the image tokens were laid out.
    pub layout: ImageLayout,
}

impl Backbone {
    /// Opens and loads `root` with weights in `dtype` on `device`.
    pub fn open(root: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let dir = ModelDir::open(root)?;
        let config = LlavaConfig::from_file(&dir.config)?;
        let tokenizer = TextTokenizer::from_file(&dir.tokenizer)?;
        let processor = ProcessorConfig::from_file(&dir.preprocessor)?;
        let image_token = tokenizer.token_id("<image>");
        if image_token != Some(config.image_token_index) {
            return Err(LmmError::BadFile {
                path: dir.tokenizer.clone(),
                message: format!(
                    "the tokenizer's <image> token is {image_token:?} but config.json says image_token_index {}",
                    config.image_token_index
                ),
            });
        }
        let model = LlavaModel::load(&dir, &config, dtype, device)?;
        let template = default_template(&config);
        Ok(Self { dir, config, tokenizer, processor, template, image_prompt: DEFAULT_IMAGE_PROMPT.into(), model })
    }

    /// The loaded model.
    pub fn model(&self) -> &LlavaModel {
        &self.model
    }

    /// Runs the family's image processor.
    pub fn process_image(&self, image: &RgbImage) -> Result<Processed> {
        Ok(match self.config.family {
            Family::Llava15 => process_llava15(image, &self.processor)?,
            Family::LlavaNext => process_llava_next(image, &self.processor)?,
        })
    }

    /// Builds model inputs for `text`, grounding each of `phrases` (spans of the text, in order).
    pub fn prepare(&self, image: &RgbImage, text: &str, phrases: &[String]) -> Result<Prepared> {
        self.prepare_segments(image, &segments_from_phrases(text, phrases)?)
    }

    /// Builds model inputs from caption segments (PNG style).
    pub fn prepare_segments(&self, image: &RgbImage, segments: &[Segment]) -> Result<Prepared> {
        let text = tokenize_segments(&self.tokenizer, self.template, &self.image_prompt, segments)?;
        self.prepare_tokens(image, text)
    }

    /// Builds model inputs from an already tokenized text.
    pub fn prepare_tokens(&self, image: &RgbImage, text: TokenizedText) -> Result<Prepared> {
        let processed = self.process_image(image)?;
        let input = VisionInput {
            pixel_values: processed.pixel_values.to_device(self.model.device())?,
            original: (processed.geometry.original.height as usize, processed.geometry.original.width as usize),
            tiles: processed.anyres.map(|a| (a.grid_rows as usize, a.grid_cols as usize)),
        };
        let expanded = self.model.expand(&text, &input)?;
        Ok(Prepared { text, image: processed, expanded })
    }

    /// The frozen pass: attention stacks and phrase hidden states.
    pub fn features(&self, prepared: &Prepared, capture: &Capture) -> Result<FrozenFeatures> {
        let captured = self.model.capture(&prepared.expanded, capture)?;
        Ok(FrozenFeatures {
            attention: attention_maps(&captured.rows, prepared.expanded.layout)?,
            phrase_hidden: captured.phrase_hidden,
            geometry: prepared.image.geometry,
            layout: prepared.expanded.layout,
        })
    }
}
