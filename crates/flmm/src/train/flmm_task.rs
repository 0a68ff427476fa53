//! Training F-LMM's whole head on the real mix (spec §1.1, §2.2): per sample one frozen backbone pass
//! (no gradients), then the U-Net, the crop, the SAM refiner, and BCE + Dice on both outputs.

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use flmm_data::coco_mask::Mask;
use flmm_data::png_dataset::{PngDataset, PngNarrative, PngOptions, PngSplit};
use flmm_data::refcoco::{load_refcoco, RefCocoOptions, RefCocoSample, RefDataset, TextMode};
use flmm_head::sam::Sam;
use flmm_head::{GroundingHead, UNetConfig};
use flmm_lmm::backbone::{Backbone, Prepared};
use flmm_lmm::prompt::{tokenize_expressions, Segment, Template};
use flmm_nn::params::ParamStore;
use flmm_nn::resize::resize_nearest_plane;

use super::config::{FlmmDataConfig, TrainConfig};
use super::task::{mask_loss, SampleLoss, TrainTask};
use crate::pipeline::Grounder;

/// One training sample: an image with all its referring expressions, or one narrative.
pub enum FlmmSample {
    /// A RefCOCO-family image (expressions concatenated with '.', as F-LMM trains).
    RefCoco(RefCocoSample),
    /// A PNG narrative.
    Png(PngNarrative),
}

/// The F-LMM head with its frozen backbone and data.
pub struct FlmmTask {
    grounder: Grounder,
    params: ParamStore,
    samples: Vec<FlmmSample>,
    data_name: String,
}

fn err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Loads the training mix named by `data.datasets`.
pub fn load_mix(data: &FlmmDataConfig) -> anyhow::Result<Vec<FlmmSample>> {
    let mut samples = Vec::new();
    for name in &data.datasets {
        let dataset = match name.as_str() {
            "png" => {
                let d = PngDataset::load_standard(&data.root, PngSplit::Train, &PngOptions::default())?;
                samples.extend(d.narratives.into_iter().map(FlmmSample::Png));
                continue;
            }
            "refcoco" => RefDataset::RefCoco,
            "refcoco+" => RefDataset::RefCocoPlus,
            _ => RefDataset::RefCocog,
        };
        let options = RefCocoOptions { text_mode: TextMode::Random { seed: data.text_seed }, ..Default::default() };
        samples.extend(load_refcoco(&data.root, dataset, "train", &options)?.samples.into_iter().map(FlmmSample::RefCoco));
    }
    Ok(samples)
}

impl FlmmTask {
    /// Builds the task: backbone, a fresh head (U-Net initialized as mmseg, SAM's prompt encoder and
    /// mask decoder from the SAM checkpoint, `text_proj` as torch), and the data mix.
    pub fn new(config: &TrainConfig, data: &FlmmDataConfig) -> anyhow::Result<Self> {
        let (Some(model), Some(sam)) = (&config.model, &config.sam) else {
            anyhow::bail!("data.kind = \"flmm\" needs [model] and [sam]");
        };
        let dtype = crate::device::parse_dtype(&model.dtype)?;
        let device = crate::device::parse_device(&model.device)?;
        let mut backbone = Backbone::open(&model.dir, dtype, &device)?;
        if let Some(t) = &model.template {
            backbone.template = t.parse::<Template>().map_err(anyhow::Error::msg)?;
        }
        if let Some(p) = &model.prompt {
            backbone.image_prompt = p.clone();
        }
        let unet = UNetConfig { in_channels: backbone.config.attention_channels(), ..config.head.clone() };
        let t = &backbone.config.text;
        let head = GroundingHead::new(unet, Sam::load_file(&sam.checkpoint)?, t.num_hidden_layers, t.hidden_size, config.seed, &Device::Cpu)?;
        let params = head.trainable();
        let samples = load_mix(data)?;
        let data_name = format!("{} from {}", data.datasets.join("+"), data.root.display());
        Ok(Self { grounder: Grounder::from_parts(backbone, head, sam.cache.clone()), params, samples, data_name })
    }

    /// The image, the model inputs and the ground-truth masks (original size) of sample `index`.
    fn inputs(&self, index: usize) -> anyhow::Result<(image::RgbImage, Prepared, Vec<Mask>)> {
        let b = &self.grounder.backbone;
        Ok(match &self.samples[index] {
            FlmmSample::RefCoco(s) => {
                let image = flmm_data::image_io::load_rgb_image(&s.image_path)?;
                let (refs, texts): (Vec<usize>, Vec<String>) = s.expressions().into_iter().map(|(r, t)| (r, t.to_string())).unzip();
                let tokens = tokenize_expressions(&b.tokenizer, b.template, &b.image_prompt, &texts)?;
                let masks = s.masks()?;
                let prepared = b.prepare_tokens(&image, tokens)?;
                (image, prepared, refs.iter().map(|&r| masks[r].clone()).collect())
            }
            FlmmSample::Png(n) => {
                let image = flmm_data::image_io::load_rgb_image(&n.image_path)?;
                let segments: Vec<Segment> = n.segments.iter().map(|s| Segment { text: s.utterance.clone(), phrase: s.mask_index }).collect();
                let prepared = b.prepare_segments(&image, &segments)?;
                (image, prepared, n.load_masks()?)
            }
        })
    }
}

/// Masks `[N]` (original size) → nearest to the processor's image size → nearest to `(h, w)`, as F-LMM
/// builds its targets (spec §2.2): `[N, h, w]` f32.
fn targets(masks: &[Mask], processor: (usize, usize), h: usize, w: usize) -> Result<Tensor> {
    let mut data = Vec::with_capacity(masks.len() * h * w);
    for m in masks {
        let plane: Vec<f32> = m.data.iter().map(|&v| v as f32).collect();
        let proc = resize_nearest_plane(&plane, m.height as usize, m.width as usize, processor.0, processor.1);
        data.extend(resize_nearest_plane(&proc, processor.0, processor.1, h, w));
    }
    Tensor::from_vec(data, (masks.len(), h, w), &Device::Cpu)
}

impl TrainTask for FlmmTask {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample_loss(&self, index: usize, _dtype: DType) -> Result<SampleLoss> {
        let (image, prepared, masks) = self.inputs(index).map_err(err)?;
        let prediction = self.grounder.predict(&image, &prepared).map_err(err)?;
        let g = &prepared.image.geometry;
        let processor = (g.image_shape.height as usize, g.image_shape.width as usize);
        let (_, uh, uw) = prediction.unet.dims3()?;
        let (_, sh, sw) = prediction.refined.dims3()?;
        let unet = mask_loss(&prediction.unet, &targets(&masks, processor, uh, uw)?)?;
        let sam = mask_loss(&prediction.refined, &targets(&masks, processor, sh, sw)?)?;
        let mut logs = unet.logs;
        logs.extend(sam.logs.into_iter().map(|(k, v)| (format!("sam_{k}"), v)));
        Ok(SampleLoss { loss: (unet.loss + sam.loss)?, logs })
    }

    /// SAM's IoU head and its point / no-mask embeddings are trainable in F-LMM but unused by its box +
    /// mask + text prompts, so they never receive a gradient (and AdamW skips them).
    fn may_lack_gradient(&self, name: &str) -> bool {
        const UNUSED: [&str; 5] = [
            "sam.model.mask_decoder.iou_prediction_head.",
            "sam.model.prompt_encoder.no_mask_embed.",
            "sam.model.prompt_encoder.not_a_point_embed.",
            "sam.model.prompt_encoder.point_embeddings.0.",
            "sam.model.prompt_encoder.point_embeddings.1.",
        ];
        UNUSED.iter().any(|p| name.starts_with(p))
    }

    fn export(&self, dir: &Path) -> anyhow::Result<()> {
        self.grounder.head.save(&dir.join("head.safetensors"))?;
        let b = &self.grounder.backbone;
        let sidecar = serde_json::json!({
            "format": "flmm-head/1",
            "backbone": b.dir.root.display().to_string(),
            "family": b.config.family.name(),
            "channel_order": "layer*heads+head (coarse then fine for LLaVA-NeXT)",
            "unet": self.grounder.head.unet.config(),
            "data": self.data_name,
        });
        flmm_nn::fsutil::write_atomic(&dir.join("head.json"), serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
        Ok(())
    }
}

