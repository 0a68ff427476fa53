//! The parameters of a LLaVA-1.5 model (transformers 4.39 key names) and their initialization as
//! transformers' `_init_weights` does it: normal(0, 0.02) for linear weights, embeddings and CLIP's class
//! and position embeddings; zero biases; norms at weight 1, bias 0.

use candle_core::{DType, Device, Tensor};
use flmm_nn::params::ParamStore;
use flmm_nn::rng::Rng;

use crate::config::LlavaConfig;
use crate::error::Result;

/// Prefix of the CLIP tower's keys.
pub const VISION: &str = "vision_tower.vision_model";
/// Prefix of the projector's keys.
pub const PROJECTOR: &str = "multi_modal_projector";
/// Prefix of the decoder's keys.
pub const DECODER: &str = "language_model.model";
/// Key of the output projection.
pub const LM_HEAD: &str = "language_model.lm_head.weight";

/// Standard deviation of the normal initialization (transformers' `initializer_range`).
const INIT_STD: f64 = 0.02;

/// How a parameter starts.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    Normal,
    /// Normal with standard deviation `fan_in^-1/2`, for the matrices of linear layers and the patch
    /// embedding.
    FanIn(usize),
    Zeros,
    Ones,
    /// Vision position embeddings: a 2-D sine–cosine table of the patch grid (row 0, the CLS token's,
    /// zero), scaled by [`POSITION_SCALE`].
    GridSinCos,
}

/// Amplitude of the initial vision position embeddings. A table as faint as the other weights (std
/// 0.02) leaves the tokens after the pre-LayerNorm almost without position, and a tower trained from
/// scratch then learns neither where things are nor their shape (measured on the toy world); this
/// amplitude puts position on a par with the patch content at the start.
const POSITION_SCALE: f64 = 0.3;

/// The 2-D sine–cosine position table `[g² + 1, d]` (MAE's layout: the first half of the channels
/// encode the row, the second half the column, each half split into sines and cosines of geometric
/// frequencies), row 0 zero for the CLS token.
fn grid_sin_cos(grid: usize, d: usize) -> Vec<f32> {
    let quarter = d / 4;
    let mut out = vec![0f32; (grid * grid + 1) * d];
    for r in 0..grid {
        for c in 0..grid {
            let row = &mut out[(1 + r * grid + c) * d..][..d];
            for (half, coord) in [(0, r), (1, c)] {
                for k in 0..quarter {
                    let freq = 1.0 / 10000f64.powf(k as f64 / quarter as f64);
                    let angle = coord as f64 * freq;
                    row[half * 2 * quarter + k] = (POSITION_SCALE * angle.sin()) as f32;
                    row[half * 2 * quarter + quarter + k] = (POSITION_SCALE * angle.cos()) as f32;
                }
            }
        }
    }
    out
}

/// The parameter list being built.
#[derive(Default)]
struct Spec(Vec<(String, Vec<usize>, Start)>);

impl Spec {
    fn add(&mut self, name: String, shape: Vec<usize>, start: Start) {
        self.0.push((name, shape, start));
    }

    fn layer_norm(&mut self, prefix: &str, d: usize) {
        self.add(format!("{prefix}.weight"), vec![d], Start::Ones);
        self.add(format!("{prefix}.bias"), vec![d], Start::Zeros);
    }

    fn linear(&mut self, prefix: &str, input: usize, output: usize, bias: bool) {
        self.add(format!("{prefix}.weight"), vec![output, input], Start::FanIn(input));
        if bias {
            self.add(format!("{prefix}.bias"), vec![output], Start::Zeros);
        }
    }
}

fn entries(config: &LlavaConfig) -> Vec<(String, Vec<usize>, Start)> {
    let v = &config.vision;
    let t = &config.text;
    let (vd, vm, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let (td, tm) = (t.hidden_size, t.intermediate_size);
    let kv = t.num_key_value_heads * t.head_dim();
    let mut s = Spec::default();
    let e = format!("{VISION}.embeddings");
    s.add(format!("{e}.patch_embedding.weight"), vec![vd, 3, p, p], Start::FanIn(3 * p * p));
    s.add(format!("{e}.class_embedding"), vec![vd], Start::Normal);
    s.add(format!("{e}.position_embedding.weight"), vec![v.grid() * v.grid() + 1, vd], Start::GridSinCos);
    s.layer_norm(&format!("{VISION}.pre_layrnorm"), vd);
    for i in 0..config.vision_layers_to_run() {
        let l = format!("{VISION}.encoder.layers.{i}");
        s.layer_norm(&format!("{l}.layer_norm1"), vd);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            s.linear(&format!("{l}.self_attn.{proj}"), vd, vd, true);
        }
        s.layer_norm(&format!("{l}.layer_norm2"), vd);
        s.linear(&format!("{l}.mlp.fc1"), vd, vm, true);
        s.linear(&format!("{l}.mlp.fc2"), vm, vd, true);
    }
    s.linear(&format!("{PROJECTOR}.linear_1"), vd, td, true);
    s.linear(&format!("{PROJECTOR}.linear_2"), td, td, true);
    s.add(format!("{DECODER}.embed_tokens.weight"), vec![t.vocab_size, td], Start::Normal);
    for i in 0..t.num_hidden_layers {
        let l = format!("{DECODER}.layers.{i}");
        s.add(format!("{l}.input_layernorm.weight"), vec![td], Start::Ones);
        for (proj, o) in [("q_proj", td), ("k_proj", kv), ("v_proj", kv)] {
            s.linear(&format!("{l}.self_attn.{proj}"), td, o, false);
        }
        s.linear(&format!("{l}.self_attn.o_proj"), td, td, false);
        s.add(format!("{l}.post_attention_layernorm.weight"), vec![td], Start::Ones);
        s.linear(&format!("{l}.mlp.gate_proj"), td, tm, false);
        s.linear(&format!("{l}.mlp.up_proj"), td, tm, false);
        s.linear(&format!("{l}.mlp.down_proj"), tm, td, false);
    }
    s.add(format!("{DECODER}.norm.weight"), vec![td], Start::Ones);
    if !t.tie_word_embeddings {
        s.add(LM_HEAD.into(), vec![t.vocab_size, td], Start::Normal);
    }
    s.0
}

/// Every trainable key with its shape, in a fixed order. Only the vision blocks LLaVA runs are
/// included (the blocks after `vision_feature_layer` would never receive a gradient).
pub fn parameter_shapes(config: &LlavaConfig) -> Vec<(String, Vec<usize>)> {
    entries(config).into_iter().map(|(n, s, _)| (n, s)).collect()
}

/// Freshly initialized parameters, deterministic from `seed` (values drawn in [`parameter_shapes`]
/// order), stored as `dtype`.
pub fn initial_parameters(config: &LlavaConfig, seed: u64, dtype: DType) -> Result<ParamStore> {
    let mut rng = Rng::new(seed);
    let mut store = ParamStore::new();
    for (name, shape, start) in entries(config) {
        let t = match start {
            Start::Normal => flmm_nn::init::normal(&shape, INIT_STD, &mut rng, &Device::Cpu)?,
            Start::FanIn(fan_in) => flmm_nn::init::normal(&shape, (fan_in as f64).powf(-0.5), &mut rng, &Device::Cpu)?,
            Start::Zeros => Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?,
            Start::Ones => Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)?,
            Start::GridSinCos => {
                let grid = config.vision.grid();
                Tensor::from_vec(grid_sin_cos(grid, shape[1]), shape.as_slice(), &Device::Cpu)?
            }
        };
        store.insert(name, t.to_dtype(dtype)?)?;
    }
    Ok(store)
}
