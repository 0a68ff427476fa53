//! MobileSAM's image encoder: a TinyViT (frozen, inference only) followed by SAM's neck.
//!
//! Layout of the network, for an input `[B, 3, S, S]` (S a multiple of 16):
//!
//! * patch embedding: two 3×3 stride-2 convolutions (BatchNorm, GELU between) → `S/4`;
//! * stage 0: MBConv blocks (1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU);
//! * stages 1–3: TinyViT blocks — windowed attention with a learned bias per `(|dy|, |dx|)` offset,
//!   a 3×3 depthwise "local" convolution, and an MLP;
//! * between stages a patch merging (1×1, 3×3 depthwise, 1×1) with strides 2, 2 and **1**: MobileSAM
//!   keeps the last stage at `S/16`;
//! * neck: 1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d, to 256 channels.
//!
//! Every convolution of the TinyViT is followed by an eval-mode BatchNorm (eps 1e-5), which is
//! folded into the convolution at load time. GELU is the exact (erf) one; LayerNorm eps is 1e-5,
//! the neck's LayerNorm2d eps 1e-6. Internally activations are channels-last (`[B, H, W, C]`), so
//! 1×1 convolutions and linear layers are plain matrix products. Frozen, so it uses candle's fused
//! (non-differentiable) LayerNorm and softmax.

use candle_core::{DType, Device, Tensor};
use candle_nn::ops::{layer_norm, softmax_last_dim};

use super::weights::SamWeights;
use crate::error::HeadError;

/// Eps of every BatchNorm2d in TinyViT (PyTorch's default).
pub const BATCH_NORM_EPS: f64 = 1e-5;
/// Eps of the LayerNorms inside attention and MLP (PyTorch's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;
/// Eps of the neck's LayerNorm2d (SAM's).
pub const NECK_LAYER_NORM_EPS: f64 = 1e-6;
/// Strides of the patch mergings after stages 0, 1 and 2. MobileSAM's code picks stride 1 when the
/// merging's output width is 320, 448 or 576 (which it only is before the last stage), and sets
/// the last stage's resolution equal to stage 2's; this constant is the only combination it runs.
pub const MERGE_STRIDES: [usize; 3] = [2, 2, 1];
/// Total downsampling of the encoder: output side = input side / 16.
pub const ENCODER_STRIDE: usize = 16;

/// Hyper-parameters of MobileSAM's TinyViT encoder (names as in its `TinyViT.__init__`).
#[derive(Debug, Clone, PartialEq)]
pub struct TinyVitConfig {
    /// Nominal input side (SAM pads images to 1024²); the forward accepts any multiple of 16.
    pub img_size: usize,
    /// Channels of stages 0–3.
    pub embed_dims: [usize; 4],
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Attention heads per stage; entry 0 is unused (stage 0 is convolutional).
    pub num_heads: [usize; 4],
    /// Attention window side per stage; entry 0 is unused.
    pub window_sizes: [usize; 4],
    /// MLP hidden width = `int(dim · mlp_ratio)`.
    pub mlp_ratio: f64,
    /// MBConv hidden width = `int(dim · mbconv_expand_ratio)`.
    pub mbconv_expand_ratio: f64,
    /// Kernel of the depthwise convolution between attention and MLP (odd).
    pub local_conv_size: usize,
    /// Output channels of the neck.
    pub neck_dim: usize,
}

impl TinyVitConfig {
    /// MobileSAM's encoder (`build_sam_vit_t` in MobileSAM's `build_sam.py`).
    pub fn mobile_sam() -> Self {
        Self {
            img_size: 1024,
            embed_dims: [64, 128, 160, 320],
            depths: [2, 2, 6, 2],
            num_heads: [2, 4, 5, 10],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4.0,
            mbconv_expand_ratio: 4.0,
            local_conv_size: 3,
            neck_dim: 256,
        }
    }

    /// Checks that the numbers describe a buildable encoder.
    pub fn validate(&self) -> Result<(), HeadError> {
        let bad = |m: String| Err(HeadError::InvalidConfig(format!("TinyViT: {m}")));
        if self.embed_dims.contains(&0) || self.neck_dim == 0 {
            return bad(format!("zero width in embed_dims {:?} / neck_dim {}", self.embed_dims, self.neck_dim));
        }
        for i in 1..4 {
            let (dim, heads, window) = (self.embed_dims[i], self.num_heads[i], self.window_sizes[i]);
            if heads == 0 || !dim.is_multiple_of(heads) || window == 0 {
                return bad(format!("stage {i}: {heads} heads / window {window} do not fit width {dim}"));
            }
        }
        if self.local_conv_size.is_multiple_of(2) {
            return bad(format!("local_conv_size {} must be odd", self.local_conv_size));
        }
        if self.mlp_hidden(self.embed_dims[1]) == 0 || self.mbconv_hidden() == 0 {
            return bad(format!("ratios mlp {} / mbconv {} give empty layers", self.mlp_ratio, self.mbconv_expand_ratio));
        }
        if self.img_size == 0 || !self.img_size.is_multiple_of(ENCODER_STRIDE) {
            return bad(format!("img_size {} is not a positive multiple of {ENCODER_STRIDE}", self.img_size));
        }
        Ok(())
    }

    fn mlp_hidden(&self, dim: usize) -> usize {
        (dim as f64 * self.mlp_ratio) as usize
    }

    fn mbconv_hidden(&self) -> usize {
        (self.embed_dims[0] as f64 * self.mbconv_expand_ratio) as usize
    }

    /// Every tensor the encoder reads, as `(key, shape)` under `prefix` (e.g. `"image_encoder"`),
    /// in checkpoint (state-dict) order: parameters and BatchNorm running statistics; not
    /// `num_batches_tracked`, nor the unused classifier (`norm_head.*`, `head.*`).
    pub fn expected_shapes(&self, prefix: &str) -> Result<Vec<(String, Vec<usize>)>, HeadError> {
        self.validate()?;
        let mut reader = Reader { source: None, prefix, seen: Vec::new() };
        TinyViT::build(&mut reader, self)?;
        Ok(reader.seen)
    }

    /// Infers the config from the shapes under `prefix`: widths, depths (by counting blocks), heads
    /// and windows (from `attention_biases`, `[heads, window²]`), ratios, kernel and neck width.
    /// Shapes do not carry `img_size` nor the unused stage-0 heads/window: those take MobileSAM's
    /// values. Every expected tensor is then checked; errors name the offending key.
    pub fn detect(w: &SamWeights, prefix: &str) -> Result<Self, HeadError> {
        let probe = Probe { w, prefix };
        probe.reject_extra_stage()?;
        let mut depths = [0; 4];
        for (i, depth) in depths.iter_mut().enumerate() {
            *depth = probe.count_blocks(i)?;
        }
        let c0 = probe.dim("patch_embed.seq.2.c.weight", 4, 0)?;
        let mut config = Self { depths, ..Self::mobile_sam() };
        config.embed_dims[0] = c0;
        config.mbconv_expand_ratio = probe.dim("layers.0.blocks.0.conv1.c.weight", 4, 0)? as f64 / c0 as f64;
        for i in 1..4 {
            config.embed_dims[i] = probe.dim(&format!("layers.{i}.blocks.0.attn.norm.weight"), 1, 0)?;
            let (heads, window) = probe.bias_table(i)?;
            if !config.embed_dims[i].is_multiple_of(heads) {
                let key = join(prefix, &format!("layers.{i}.blocks.0.attn.attention_biases"));
                return Err(probe.error(&key, format!("{heads} heads do not divide the stage width {}", config.embed_dims[i])));
            }
            config.num_heads[i] = heads;
            config.window_sizes[i] = window;
        }
        config.mlp_ratio = probe.dim("layers.1.blocks.0.mlp.fc1.weight", 2, 0)? as f64 / config.embed_dims[1] as f64;
        config.local_conv_size = probe.dim("layers.1.blocks.0.local_conv.c.weight", 4, 2)?;
        config.neck_dim = probe.dim("neck.0.weight", 4, 0)?;
        config.validate().map_err(|e| probe.error(prefix, format!("inconsistent TinyViT shapes: {e}")))?;
        for (key, shape) in config.expected_shapes(prefix)? {
            match w.shape_of(&key) {
                Some(found) if found == shape => {}
                Some(found) => return Err(probe.error(&key, format!("shape {found:?}, expected {shape:?} for {config:?}"))),
                None => return Err(probe.error(&key, format!("missing (expected shape {shape:?})"))),
            }
        }
        Ok(config)
    }
}

/// `prefix.name`, accepting a prefix with or without its trailing dot (or an empty one).
fn join(prefix: &str, name: &str) -> String {
    match prefix {
        "" => name.to_string(),
        p if p.ends_with('.') => format!("{p}{name}"),
        p => format!("{p}.{name}"),
    }
}

/// Shape queries for [`TinyVitConfig::detect`].
struct Probe<'a> {
    w: &'a SamWeights,
    prefix: &'a str,
}

impl Probe<'_> {
    fn error(&self, key: &str, message: String) -> HeadError {
        HeadError::Checkpoint { path: self.w.source().to_path_buf(), message: format!("{key}: {message}") }
    }

    /// Dimension `axis` of `name`, which must have `rank` dimensions.
    fn dim(&self, name: &str, rank: usize, axis: usize) -> Result<usize, HeadError> {
        let key = join(self.prefix, name);
        match self.w.shape_of(&key) {
            Some(s) if s.len() == rank => Ok(s[axis]),
            Some(s) => Err(self.error(&key, format!("shape {s:?} should have {rank} dimensions"))),
            None => Err(self.error(&key, "missing: not a MobileSAM TinyViT encoder under this prefix".into())),
        }
    }

    /// Number of blocks of stage `i`: one more than the largest `layers.{i}.blocks.{j}` index.
    fn count_blocks(&self, i: usize) -> Result<usize, HeadError> {
        let stem = join(self.prefix, &format!("layers.{i}.blocks."));
        let depth = self
            .w
            .keys()
            .filter_map(|k| k.strip_prefix(&stem)?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |j| j + 1);
        if depth == 0 {
            return Err(self.error(&format!("{stem}0"), format!("stage {i} has no blocks")));
        }
        Ok(depth)
    }

    /// `(heads, window)` from `attention_biases: [heads, window²]` of stage `i`'s first block.
    fn bias_table(&self, i: usize) -> Result<(usize, usize), HeadError> {
        let name = format!("layers.{i}.blocks.0.attn.attention_biases");
        let heads = self.dim(&name, 2, 0)?;
        let offsets = self.dim(&name, 2, 1)?;
        let window = (1..=offsets).find(|s| s * s >= offsets).unwrap_or(0);
        if window * window != offsets {
            return Err(self.error(&join(self.prefix, &name), format!("{offsets} offsets is not a square window")));
        }
        Ok((heads, window))
    }

    /// MobileSAM's TinyViT has exactly four stages.
    fn reject_extra_stage(&self) -> Result<(), HeadError> {
        let stem = join(self.prefix, "layers.4.");
        match self.w.keys().find(|k| k.starts_with(&stem)) {
            Some(k) => Err(self.error(k, "MobileSAM's TinyViT has 4 stages (layers.0-3)".into())),
            None => Ok(()),
        }
    }
}

/// Where [`TinyViT::build`] takes tensors from: a checkpoint, or nowhere (zeros, to list shapes).
struct Reader<'a> {
    source: Option<&'a SamWeights>,
    prefix: &'a str,
    seen: Vec<(String, Vec<usize>)>,
}

impl Reader<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, HeadError> {
        let key = join(self.prefix, name);
        let t = match self.source {
            Some(w) => w.get(&key, shape)?,
            None => Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
        };
        self.seen.push((key, shape.to_vec()));
        Ok(t)
    }
}

/// How a convolution's weight is laid out for channels-last input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ConvKind {
    /// 1×1: weight `[Cin, Cout]`.
    Pointwise,
    /// Depthwise k×k: weight `[k², C]`.
    Depthwise,
    /// Dense k×k: weight `[k²·Cin, Cout]`, rows ordered (ky, kx, cin).
    Dense,
}

/// A convolution on `[B, H, W, C]` with zero padding `k / 2`, BatchNorm folded into `bias`.
struct Conv {
    kind: ConvKind,
    weight: Tensor,
    bias: Option<Tensor>,
    k: usize,
    stride: usize,
}

/// Shape of a convolution in PyTorch terms.
#[derive(Clone, Copy)]
struct ConvSpec {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
}

impl ConvSpec {
    fn dense(cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        Self { cin, cout, k, stride, depthwise: false }
    }

    fn depthwise(c: usize, k: usize, stride: usize) -> Self {
        Self { cin: c, cout: c, k, stride, depthwise: true }
    }
}

impl Conv {
    /// `Conv2d_BN`: `{name}.c.weight` (no bias) and `{name}.bn.*`, folded:
    /// `w·γ/√(σ²+ε)`, `β − μ·γ/√(σ²+ε)` (computed in f64).
    fn load_bn(r: &mut Reader, name: &str, spec: ConvSpec) -> Result<Self, HeadError> {
        let weight = Self::read_weight(r, &format!("{name}.c.weight"), spec)?.to_dtype(DType::F64)?;
        let mut bn = Vec::with_capacity(4);
        for part in ["weight", "bias", "running_mean", "running_var"] {
            bn.push(r.get(&format!("{name}.bn.{part}"), &[spec.cout])?.to_dtype(DType::F64)?);
        }
        let scale = (&bn[0] / (&bn[3] + BATCH_NORM_EPS)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&scale.reshape((spec.cout, 1, 1, 1))?)?.to_dtype(DType::F32)?;
        let bias = (&bn[1] - (&bn[2] * &scale)?)?.to_dtype(DType::F32)?;
        Self::from_torch(weight, Some(bias), spec)
    }

    /// A plain bias-free `Conv2d` weight at `name` (the neck's).
    fn load_plain(r: &mut Reader, name: &str, spec: ConvSpec) -> Result<Self, HeadError> {
        let weight = Self::read_weight(r, name, spec)?;
        Self::from_torch(weight, None, spec)
    }

    fn read_weight(r: &mut Reader, key: &str, spec: ConvSpec) -> Result<Tensor, HeadError> {
        let cin_per_group = if spec.depthwise { 1 } else { spec.cin };
        r.get(key, &[spec.cout, cin_per_group, spec.k, spec.k])
    }

    /// Re-lays a PyTorch `[Cout, Cin/groups, k, k]` weight for channels-last products.
    fn from_torch(w: Tensor, bias: Option<Tensor>, spec: ConvSpec) -> Result<Self, HeadError> {
        let ConvSpec { cin, cout, k, stride, depthwise } = spec;
        let (kind, weight) = if depthwise {
            (ConvKind::Depthwise, w.reshape((cout, k * k))?.t()?.contiguous()?)
        } else if k == 1 {
            (ConvKind::Pointwise, w.reshape((cout, cin))?.t()?.contiguous()?)
        } else {
            (ConvKind::Dense, w.permute((2, 3, 1, 0))?.reshape((k * k * cin, cout))?.contiguous()?)
        };
        Ok(Self { kind, weight, bias, k, stride })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let y = match self.kind {
            ConvKind::Pointwise => matmul_last(x, &self.weight)?,
            ConvKind::Depthwise => self.depthwise(x)?,
            ConvKind::Dense => {
                let cols = Tensor::cat(&taps(x, self.k, self.stride)?, 3)?;
                matmul_last(&cols, &self.weight)?
            }
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Σ over taps of `tap · w[tap, c]`.
    fn depthwise(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let mut acc: Option<Tensor> = None;
        for (i, tap) in taps(x, self.k, self.stride)?.iter().enumerate() {
            let term = tap.broadcast_mul(&self.weight.get(i)?)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
        acc.ok_or_else(|| HeadError::InvalidConfig("depthwise convolution with an empty kernel".into()))
    }
}

/// `x [.., Cin] · w [Cin, Cout]` → `[.., Cout]`.
fn matmul_last(x: &Tensor, w: &Tensor) -> Result<Tensor, HeadError> {
    let dims = x.dims().to_vec();
    let (cin, cout) = w.dims2()?;
    let rows = x.elem_count() / cin;
    let y = x.reshape((rows, cin))?.matmul(w)?;
    let mut out = dims;
    out.pop();
    out.push(cout);
    Ok(y.reshape(out)?)
}

/// The k² shifted (and strided) views of `x [B, H, W, C]` that a k×k convolution with zero padding
/// `k / 2` and `stride` reads, in (ky, kx) order, each `[B, Ho, Wo, C]`.
fn taps(x: &Tensor, k: usize, stride: usize) -> Result<Vec<Tensor>, HeadError> {
    let (b, h, w, c) = x.dims4()?;
    let pad = k / 2;
    let out_size = |n: usize| (n + 2 * pad - k) / stride + 1;
    let (ho, wo) = (out_size(h), out_size(w));
    // Pad by `pad` plus up to a multiple of the stride, so rows split as (row / stride, row % stride).
    let extra = |n: usize| (n + 2 * pad).next_multiple_of(stride) - (n + 2 * pad);
    let padded = x.pad_with_zeros(1, pad, pad + extra(h))?.pad_with_zeros(2, pad, pad + extra(w))?;
    let (hp, wp) = (h + 2 * pad + extra(h), w + 2 * pad + extra(w));
    let grid = padded.reshape((b, hp / stride, stride, wp / stride, stride, c))?;
    let mut out = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let tap = grid
                .narrow(1, ky / stride, ho)?
                .narrow(2, ky % stride, 1)?
                .narrow(3, kx / stride, wo)?
                .narrow(4, kx % stride, 1)?;
            out.push(if stride == 1 { tap.squeeze(4)?.squeeze(2)? } else { tap.reshape((b, ho, wo, c))? });
        }
    }
    Ok(out)
}

/// A linear layer, weight stored transposed (`[in, out]`).
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(r: &mut Reader, name: &str, din: usize, dout: usize) -> Result<Self, HeadError> {
        let weight_t = r.get(&format!("{name}.weight"), &[dout, din])?.t()?.contiguous()?;
        let bias = r.get(&format!("{name}.bias"), &[dout])?;
        Ok(Self { weight_t, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        Ok(matmul_last(x, &self.weight_t)?.broadcast_add(&self.bias)?)
    }
}

/// LayerNorm over the last dimension.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn load(r: &mut Reader, name: &str, dim: usize, eps: f64) -> Result<Self, HeadError> {
        Ok(Self { weight: r.get(&format!("{name}.weight"), &[dim])?, bias: r.get(&format!("{name}.bias"), &[dim])?, eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        Ok(layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)?)
    }
}

/// MBConv: 1×1 expand → GELU → depthwise 3×3 → GELU → 1×1 project, + input, GELU.
struct MbConv {
    convs: [Conv; 3],
}

impl MbConv {
    fn load(r: &mut Reader, name: &str, dim: usize, hidden: usize) -> Result<Self, HeadError> {
        Ok(Self {
            convs: [
                Conv::load_bn(r, &format!("{name}.conv1"), ConvSpec::dense(dim, hidden, 1, 1))?,
                Conv::load_bn(r, &format!("{name}.conv2"), ConvSpec::depthwise(hidden, 3, 1))?,
                Conv::load_bn(r, &format!("{name}.conv3"), ConvSpec::dense(hidden, dim, 1, 1))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let y = gelu(&self.convs[0].forward(x)?)?;
        let y = gelu(&self.convs[1].forward(&y)?)?;
        let y = self.convs[2].forward(&y)?;
        gelu(&(y + x)?)
    }
}

/// Patch merging: 1×1 → GELU → depthwise 3×3 with the stage's stride → GELU → 1×1.
struct PatchMerging {
    convs: [Conv; 3],
}

impl PatchMerging {
    fn load(r: &mut Reader, name: &str, din: usize, dout: usize, stride: usize) -> Result<Self, HeadError> {
        Ok(Self {
            convs: [
                Conv::load_bn(r, &format!("{name}.conv1"), ConvSpec::dense(din, dout, 1, 1))?,
                Conv::load_bn(r, &format!("{name}.conv2"), ConvSpec::depthwise(dout, 3, stride))?,
                Conv::load_bn(r, &format!("{name}.conv3"), ConvSpec::dense(dout, dout, 1, 1))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let y = gelu(&self.convs[0].forward(x)?)?;
        let y = gelu(&self.convs[1].forward(&y)?)?;
        self.convs[2].forward(&y)
    }
}

/// Attention within `window × window` token windows, with a learned bias per head and per
/// offset `(|dy|, |dx|)`. q, k, v come interleaved per head from one `qkv` projection.
struct WindowAttention {
    norm: Norm,
    qkv: Linear,
    proj: Linear,
    /// `[1, heads, N, N]`, `N = window²`: `attention_biases[h, |dy|·window + |dx|]`.
    bias: Tensor,
    heads: usize,
    window: usize,
}

impl WindowAttention {
    fn load(r: &mut Reader, name: &str, dim: usize, heads: usize, window: usize) -> Result<Self, HeadError> {
        let table = r.get(&format!("{name}.attention_biases"), &[heads, window * window])?;
        let norm = Norm::load(r, &format!("{name}.norm"), dim, LAYER_NORM_EPS)?;
        let qkv = Linear::load(r, &format!("{name}.qkv"), dim, 3 * dim)?;
        let proj = Linear::load(r, &format!("{name}.proj"), dim, dim)?;
        let bias = Self::expand_bias(&table, window)?;
        Ok(Self { norm, qkv, proj, bias, heads, window })
    }

    /// Gathers the `[heads, window²]` offset table into a `[1, heads, N, N]` bias.
    fn expand_bias(table: &Tensor, window: usize) -> Result<Tensor, HeadError> {
        let n = window * window;
        let index: Vec<u32> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                ((i / window).abs_diff(j / window) * window + (i % window).abs_diff(j % window)) as u32
            })
            .collect();
        let index = Tensor::from_vec(index, n * n, table.device())?;
        let heads = table.dim(0)?;
        Ok(table.index_select(&index, 1)?.reshape((1, heads, n, n))?)
    }

    /// `x [B, H, W, C]` → attention output of the same shape. The grid is zero-padded at the
    /// bottom/right to whole windows; padded tokens take part as keys (no mask) and are cropped.
    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let (b, h, w, c) = x.dims4()?;
        let ws = self.window;
        let (ph, pw) = (h.next_multiple_of(ws), w.next_multiple_of(ws));
        let (nh, nw) = (ph / ws, pw / ws);
        let windows = x
            .pad_with_zeros(1, 0, ph - h)?
            .pad_with_zeros(2, 0, pw - w)?
            .reshape((b, nh, ws, nw, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .reshape((b * nh * nw, ws * ws, c))?;
        let y = self.attend(&windows)?;
        let y = y.reshape((b, nh, nw, ws, ws, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((b, ph, pw, c))?;
        Ok(y.narrow(1, 0, h)?.narrow(2, 0, w)?)
    }

    /// Multi-head attention over `[windows, N, C]`.
    fn attend(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let (nwin, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?.reshape((nwin, n, self.heads, 3 * hd))?;
        let part = |i: usize| -> Result<Tensor, HeadError> { Ok(qkv.narrow(3, i * hd, hd)?.transpose(1, 2)?.contiguous()?) };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.broadcast_add(&self.bias)?;
        let y = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((nwin, n, c))?;
        self.proj.forward(&y)
    }
}

/// TinyViT block: `x + attn(x)` → depthwise local conv (no residual, no activation) →
/// `x + mlp(x)`, with `mlp = fc2(GELU(fc1(LayerNorm(x))))`.
struct TinyVitBlock {
    attn: WindowAttention,
    mlp_norm: Norm,
    fc1: Linear,
    fc2: Linear,
    local_conv: Conv,
}

impl TinyVitBlock {
    fn load(r: &mut Reader, name: &str, c: &TinyVitConfig, stage: usize) -> Result<Self, HeadError> {
        let dim = c.embed_dims[stage];
        let hidden = c.mlp_hidden(dim);
        Ok(Self {
            attn: WindowAttention::load(r, &format!("{name}.attn"), dim, c.num_heads[stage], c.window_sizes[stage])?,
            mlp_norm: Norm::load(r, &format!("{name}.mlp.norm"), dim, LAYER_NORM_EPS)?,
            fc1: Linear::load(r, &format!("{name}.mlp.fc1"), dim, hidden)?,
            fc2: Linear::load(r, &format!("{name}.mlp.fc2"), hidden, dim)?,
            local_conv: Conv::load_bn(r, &format!("{name}.local_conv"), ConvSpec::depthwise(dim, c.local_conv_size, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let x = (x + self.attn.forward(x)?)?;
        let x = self.local_conv.forward(&x)?;
        let m = self.fc2.forward(&gelu(&self.fc1.forward(&self.mlp_norm.forward(&x)?)?)?)?;
        Ok((x + m)?)
    }
}

/// Stage 0 is convolutional, stages 1–3 are attention stages.
enum Blocks {
    Conv(Vec<MbConv>),
    Attention(Vec<TinyVitBlock>),
}

/// One stage: its blocks, then (for stages 0–2) a patch merging.
struct Stage {
    blocks: Blocks,
    downsample: Option<PatchMerging>,
}

impl Stage {
    fn load(r: &mut Reader, c: &TinyVitConfig, i: usize) -> Result<Self, HeadError> {
        let name = |j: usize| format!("layers.{i}.blocks.{j}");
        let blocks = if i == 0 {
            Blocks::Conv((0..c.depths[0]).map(|j| MbConv::load(r, &name(j), c.embed_dims[0], c.mbconv_hidden())).collect::<Result<_, _>>()?)
        } else {
            Blocks::Attention((0..c.depths[i]).map(|j| TinyVitBlock::load(r, &name(j), c, i)).collect::<Result<_, _>>()?)
        };
        let downsample = match MERGE_STRIDES.get(i) {
            Some(&stride) => {
                Some(PatchMerging::load(r, &format!("layers.{i}.downsample"), c.embed_dims[i], c.embed_dims[i + 1], stride)?)
            }
            None => None,
        };
        Ok(Self { blocks, downsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let mut x = x.clone();
        match &self.blocks {
            Blocks::Conv(blocks) => {
                for b in blocks {
                    x = b.forward(&x)?;
                }
            }
            Blocks::Attention(blocks) => {
                for b in blocks {
                    x = b.forward(&x)?;
                }
            }
        }
        match &self.downsample {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

/// Outputs of [`TinyViT::forward_trace`], each `[B, C, h, w]`.
pub struct TinyVitTrace {
    /// After the patch embedding (`S/4`, `embed_dims[0]` channels).
    pub patch_embed: Tensor,
    /// After each of the four stages, including its patch merging (stages 0–2).
    pub stages: Vec<Tensor>,
    /// The neck's output, `[B, neck_dim, S/16, S/16]`.
    pub output: Tensor,
}

/// MobileSAM's frozen image encoder.
pub struct TinyViT {
    config: TinyVitConfig,
    patch_embed: [Conv; 2],
    stages: Vec<Stage>,
    neck_conv1: Conv,
    neck_norm1: Norm,
    neck_conv2: Conv,
    neck_norm2: Norm,
}

impl TinyViT {
    /// Loads the encoder stored under `prefix` (`"image_encoder"` in `mobile_sam.pt`), checking
    /// every key's shape against `config`. The classifier (`norm_head`, `head`) is not read.
    pub fn load(w: &SamWeights, prefix: &str, config: &TinyVitConfig) -> Result<Self, HeadError> {
        config.validate()?;
        Self::build(&mut Reader { source: Some(w), prefix, seen: Vec::new() }, config)
    }

    fn build(r: &mut Reader, c: &TinyVitConfig) -> Result<Self, HeadError> {
        let c0 = c.embed_dims[0];
        let patch_embed = [
            Conv::load_bn(r, "patch_embed.seq.0", ConvSpec::dense(3, c0 / 2, 3, 2))?,
            Conv::load_bn(r, "patch_embed.seq.2", ConvSpec::dense(c0 / 2, c0, 3, 2))?,
        ];
        let stages = (0..4).map(|i| Stage::load(r, c, i)).collect::<Result<Vec<_>, _>>()?;
        let last = c.embed_dims[3];
        Ok(Self {
            config: c.clone(),
            patch_embed,
            stages,
            neck_conv1: Conv::load_plain(r, "neck.0.weight", ConvSpec::dense(last, c.neck_dim, 1, 1))?,
            neck_norm1: Norm::load(r, "neck.1", c.neck_dim, NECK_LAYER_NORM_EPS)?,
            neck_conv2: Conv::load_plain(r, "neck.2.weight", ConvSpec::dense(c.neck_dim, c.neck_dim, 3, 1))?,
            neck_norm2: Norm::load(r, "neck.3", c.neck_dim, NECK_LAYER_NORM_EPS)?,
        })
    }

    /// The first patch-embedding convolution (BatchNorm folded): enough to tell encoders apart.
    pub fn fingerprint_tensors(&self) -> Vec<&Tensor> {
        vec![&self.patch_embed[0].weight, &self.patch_embed[1].weight]
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &TinyVitConfig {
        &self.config
    }

    /// Image embedding: `x [B, 3, S, S]` (normalized, padded; any side that is a multiple of 16,
    /// 1024 for MobileSAM) → `[B, neck_dim, S/16, S/16]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        self.run(x, None)
    }

    /// As [`TinyViT::forward`], also returning the activations after the patch embedding and
    /// after each stage (for parity tests and inspection).
    pub fn forward_trace(&self, x: &Tensor) -> Result<TinyVitTrace, HeadError> {
        let mut kept = Vec::with_capacity(5);
        let output = self.run(x, Some(&mut kept))?;
        let patch_embed = kept.remove(0);
        Ok(TinyVitTrace { patch_embed, stages: kept, output })
    }

    fn run(&self, x: &Tensor, mut keep: Option<&mut Vec<Tensor>>) -> Result<Tensor, HeadError> {
        let mut record = |t: &Tensor| -> Result<(), HeadError> {
            if let Some(k) = keep.as_mut() {
                k.push(channels_first(t)?);
            }
            Ok(())
        };
        let x = self.check_input(x)?.permute((0, 2, 3, 1))?;
        let x = self.patch_embed[1].forward(&gelu(&self.patch_embed[0].forward(&x)?)?)?;
        record(&x)?;
        let mut x = x;
        for stage in &self.stages {
            x = stage.forward(&x)?;
            record(&x)?;
        }
        let x = self.neck_norm1.forward(&self.neck_conv1.forward(&x)?)?;
        let x = self.neck_norm2.forward(&self.neck_conv2.forward(&x)?)?;
        channels_first(&x)
    }

    fn check_input(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let ok = match x.dims() {
            [b, 3, h, w] => *b > 0 && *h > 0 && *w > 0 && h % ENCODER_STRIDE == 0 && w % ENCODER_STRIDE == 0,
            _ => false,
        };
        if !ok || !x.dtype().is_float() {
            return Err(HeadError::InvalidInput(format!(
                "TinyViT expects a float [B, 3, H, W] image with H, W multiples of {ENCODER_STRIDE}, got {:?} {:?}",
                x.dims(),
                x.dtype()
            )));
        }
        Ok(x.to_dtype(DType::F32)?)
    }
}

/// Exact (erf) GELU, as `torch.nn.GELU()`.
fn gelu(x: &Tensor) -> Result<Tensor, HeadError> {
    Ok(x.gelu_erf()?)
}

/// `[B, H, W, C]` → contiguous `[B, C, H, W]`.
fn channels_first(x: &Tensor) -> Result<Tensor, HeadError> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg_tensor(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Direct k×k convolution on NCHW, as a reference for the channels-last taps.
    fn reference_conv(x: &Tensor, w: &Tensor, stride: usize, depthwise: bool) -> Tensor {
        let groups = if depthwise { x.dim(1).unwrap() } else { 1 };
        let k = w.dim(2).unwrap();
        x.conv2d(w, k / 2, stride, 1, groups).unwrap()
    }

    #[test]
    fn channels_last_convolutions_match_candle() {
        for (depthwise, stride, h, w) in [(false, 2, 9, 8), (true, 2, 7, 10), (true, 1, 5, 6), (false, 1, 6, 5)] {
            let (cin, cout) = if depthwise { (4, 4) } else { (3, 5) };
            let x = lcg_tensor(&[1, cin, h, w], 1);
            let wt = lcg_tensor(&[cout, if depthwise { 1 } else { cin }, 3, 3], 2);
            let spec = ConvSpec { cin, cout, k: 3, stride, depthwise };
            let conv = Conv::from_torch(wt.clone(), None, spec).unwrap();
            let ours = channels_first(&conv.forward(&x.permute((0, 2, 3, 1)).unwrap()).unwrap()).unwrap();
            let expected = reference_conv(&x, &wt, stride, depthwise);
            assert_eq!(ours.dims(), expected.dims());
            let err = (ours - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 1e-5, "depthwise {depthwise} stride {stride}: {err}");
        }
    }

    #[test]
    fn bias_index_is_offset_row_major() {
        let table = Tensor::arange(0f32, 9.0, &Device::Cpu).unwrap().reshape((1, 9)).unwrap();
        let bias = WindowAttention::expand_bias(&table, 3).unwrap().reshape((9, 9)).unwrap();
        let rows: Vec<Vec<f32>> = bias.to_vec2().unwrap();
        // query (0,0) → key (2,1): offset (2,1) → 2·3+1; query (1,2) → key (0,0): (1,2) → 5.
        assert_eq!(rows[0][7], 7.0);
        assert_eq!(rows[5][0], 5.0);
        assert!((0..9).all(|i| rows[i][i] == 0.0));
    }

    #[test]
    fn mobile_sam_config_is_valid_and_bad_ones_are_refused() {
        TinyVitConfig::mobile_sam().validate().unwrap();
        let bad = TinyVitConfig { num_heads: [2, 3, 5, 10], ..TinyVitConfig::mobile_sam() };
        assert!(matches!(bad.validate(), Err(HeadError::InvalidConfig(_))));
    }

    #[test]
    fn join_accepts_prefix_forms() {
        assert_eq!(join("", "neck.0.weight"), "neck.0.weight");
        assert_eq!(join("image_encoder", "neck.0.weight"), "image_encoder.neck.0.weight");
        assert_eq!(join("image_encoder.", "neck.0.weight"), "image_encoder.neck.0.weight");
    }
}
