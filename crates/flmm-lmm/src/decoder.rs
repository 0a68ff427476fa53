//! LLaMA / Mistral decoder (RMSNorm, RoPE, grouped-query attention, optional sliding window, SwiGLU)
//! with a KV cache, phrase-row attention capture and selective hidden-state output.

use candle_core::{DType, Module, Tensor};

use crate::capture::{attention_probs, mask_rows, CaptureSink};
use crate::config::TextConfig;
use crate::error::{LmmError, Result};
use crate::layers::{RmsNorm, Rotary};
use crate::model_dir::Weights;

/// Weight-key prefixes of the language model inside a checkpoint.
#[derive(Debug, Clone)]
pub struct DecoderKeys {
    /// Prefix of `embed_tokens`, `layers.*`, `norm` (e.g. `language_model.model`).
    pub model: String,
    /// Key prefix of the output projection (e.g. `language_model.lm_head`).
    pub lm_head: String,
}

struct Layer {
    input_norm: RmsNorm,
    q: candle_nn::Linear,
    k: candle_nn::Linear,
    v: candle_nn::Linear,
    o: candle_nn::Linear,
    post_norm: RmsNorm,
    gate: candle_nn::Linear,
    up: candle_nn::Linear,
    down: candle_nn::Linear,
}

/// Keys and values of past positions, per layer: `[kv_heads, len, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dim(1).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a forward pass should return besides updating the cache.
#[derive(Default)]
pub struct ForwardRequest {
    /// Positions (absolute) whose hidden states to return, from every layer.
    pub hidden_positions: Vec<usize>,
    /// Positions (absolute) whose next-token logits to return.
    pub logit_positions: Vec<usize>,
    /// Attention rows to capture.
    pub capture: Option<CaptureSink>,
}

/// Results of a forward pass.
pub struct ForwardOutput {
    /// `[L + 1, P, d]` for the requested positions, transformers' convention: index 0 the input
    /// embeddings, index l the output of layer l, the last one after the final norm.
    pub hidden: Option<Tensor>,
    /// `[P, vocab]` in f32.
    pub logits: Option<Tensor>,
    /// `[groups, channels, keys]` in f32.
    pub captured: Option<Tensor>,
}

/// The decoder.
pub struct Decoder {
    config: TextConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rotary: Rotary,
}

/// Bytes of one `[heads, rows, keys]` f32 score block. Kept under glibc's largest mmap threshold
/// (32 MiB) so that the per-block temporaries are recycled instead of mapped and faulted in anew.
const SCORE_BLOCK_BYTES: usize = 8 << 20;

impl Decoder {
    /// Loads the decoder weights.
    pub fn load(w: &Weights, keys: &DecoderKeys, config: &TextConfig) -> Result<Self> {
        let d = config.hidden_size;
        let m = config.intermediate_size;
        let dh = config.head_dim();
        let kv = config.num_key_value_heads * dh;
        let p = &keys.model;
        let embed = w.get(&format!("{p}.embed_tokens.weight"), &[config.vocab_size, d])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = format!("{p}.layers.{i}");
            let norm = |name: &str| -> Result<RmsNorm> {
                Ok(RmsNorm::new(w.get(&format!("{l}.{name}.weight"), &[d])?, config.rms_norm_eps))
            };
            layers.push(Layer {
                input_norm: norm("input_layernorm")?,
                q: w.linear(&format!("{l}.self_attn.q_proj"), d, d, false)?,
                k: w.linear(&format!("{l}.self_attn.k_proj"), d, kv, false)?,
                v: w.linear(&format!("{l}.self_attn.v_proj"), d, kv, false)?,
                o: w.linear(&format!("{l}.self_attn.o_proj"), d, d, false)?,
                post_norm: norm("post_attention_layernorm")?,
                gate: w.linear(&format!("{l}.mlp.gate_proj"), d, m, false)?,
                up: w.linear(&format!("{l}.mlp.up_proj"), d, m, false)?,
                down: w.linear(&format!("{l}.mlp.down_proj"), m, d, false)?,
            });
        }
        let norm = RmsNorm::new(w.get(&format!("{p}.norm.weight"), &[d])?, config.rms_norm_eps);
        let head_key = format!("{}.weight", keys.lm_head);
        let lm_head = if w.contains(&head_key) || !config.tie_word_embeddings {
            w.get(&head_key, &[config.vocab_size, d])?
        } else {
            embed.clone()
        };
        Ok(Self { config: config.clone(), embed, layers, norm, lm_head, rotary: Rotary::new(dh, config.rope_theta) })
    }

    /// The configuration.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Token embeddings `[n, d]` of `ids`, with a clear error for ids outside the vocabulary.
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(LmmError::BadText(format!("token id {bad} is outside the vocabulary ({})", self.config.vocab_size)));
        }
        let idx = Tensor::from_vec(ids.to_vec(), ids.len(), self.embed.device())?;
        Ok(self.embed.index_select(&idx, 0)?)
    }

    /// Runs `embeds [n, d]` at positions `cache.len()..cache.len()+n`, appending to the cache.
    pub fn forward(&self, embeds: &Tensor, cache: &mut KvCache, mut request: ForwardRequest) -> Result<ForwardOutput> {
        let start = cache.len();
        let (n, _) = embeds.dims2()?;
        let end = start + n;
        if end > self.config.max_position_embeddings {
            return Err(LmmError::BadText(format!(
                "sequence of {end} tokens is longer than the model's {} positions",
                self.config.max_position_embeddings
            )));
        }
        for &p in request.hidden_positions.iter().chain(&request.logit_positions) {
            if p < start || p >= end {
                return Err(LmmError::BadText(format!("requested position {p} is outside this pass ({start}..{end})")));
            }
        }
        let device = embeds.device().clone();
        let (cos, sin) = self.rotary.tables(start, n, &device)?;
        let local = |ps: &[usize]| -> Result<Tensor> {
            let v: Vec<u32> = ps.iter().map(|&p| (p - start) as u32).collect();
            Ok(Tensor::from_vec(v, ps.len(), &device)?)
        };
        let hidden_idx = (!request.hidden_positions.is_empty()).then(|| local(&request.hidden_positions)).transpose()?;
        let mut hidden = Vec::new();
        let mut x = embeds.clone();
        if let Some(idx) = &hidden_idx {
            hidden.push(x.index_select(idx, 0)?);
        }
        if cache.layers.is_empty() {
            cache.layers = Vec::with_capacity(self.layers.len());
        }
        // The capture rows and their mask depend only on positions, not on the layer.
        let capture_rows = match &request.capture {
            Some(sink) => {
                let queries = sink.query_positions();
                Some((local(queries)?, mask_rows(queries, end, self.config.sliding_window, &device)?))
            }
            None => None,
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x)?;
            let (q, k, v) = self.project_qkv(layer, &h, &cos, &sin)?;
            let (k_all, v_all) = match cache.layers.get(li) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?),
                None => (k, v),
            };
            let k_exp = self.expand_kv(&k_all)?;
            let v_exp = self.expand_kv(&v_all)?;
            let o = self.attend(&q, &k_exp, &v_exp, start)?;
            if let (Some(sink), Some((rows, mask))) = (request.capture.as_mut().filter(|s| s.wants_layer(li)), &capture_rows) {
                let q_rows = q.index_select(rows, 1)?;
                sink.push_layer(&attention_probs(&q_rows, &k_exp, self.scale(), mask)?)?;
            }
            if li < cache.layers.len() {
                cache.layers[li] = (k_all, v_all);
            } else {
                cache.layers.push((k_all, v_all));
            }
            x = (x + layer.o.forward(&o)?)?;
            let h = layer.post_norm.forward(&x)?;
            let mlp = layer.down.forward(&(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?)?;
            x = (x + mlp)?;
            if let Some(idx) = &hidden_idx {
                if li + 1 < self.layers.len() {
                    hidden.push(x.index_select(idx, 0)?);
                }
            }
        }
        let x = self.norm.forward(&x)?;
        if let Some(idx) = &hidden_idx {
            hidden.push(x.index_select(idx, 0)?);
        }
        let logits = if request.logit_positions.is_empty() {
            None
        } else {
            let rows = x.index_select(&local(&request.logit_positions)?, 0)?;
            Some(rows.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?)
        };
        Ok(ForwardOutput {
            hidden: hidden_idx.map(|_| Tensor::stack(&hidden, 0)).transpose()?,
            logits,
            captured: request.capture.map(CaptureSink::finish).transpose()?,
        })
    }

    fn scale(&self) -> f64 {
        1.0 / (self.config.head_dim() as f64).sqrt()
    }

    /// `h [n, d]` → q `[H, n, dh]`, k, v `[Hkv, n, dh]`, rotary applied to q and k.
    fn project_qkv(&self, l: &Layer, h: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = h.dim(0)?;
        let dh = self.config.head_dim();
        let heads = |y: Tensor, count: usize| -> candle_core::Result<Tensor> {
            y.reshape((n, count, dh))?.transpose(0, 1)?.contiguous()
        };
        let q = heads(l.q.forward(h)?, self.config.num_attention_heads)?;
        let k = heads(l.k.forward(h)?, self.config.num_key_value_heads)?;
        let v = heads(l.v.forward(h)?, self.config.num_key_value_heads)?;
        Ok((Rotary::apply(&q, cos, sin)?, Rotary::apply(&k, cos, sin)?, v))
    }

    /// `[Hkv, T, dh]` → `[H, T, dh]`: query head h reads kv head h / (H / Hkv).
    fn expand_kv(&self, x: &Tensor) -> Result<Tensor> {
        let rep = self.config.num_attention_heads / self.config.num_key_value_heads;
        if rep == 1 {
            return Ok(x.clone());
        }
        let (hkv, t, dh) = x.dims3()?;
        Ok(x.unsqueeze(1)?.expand((hkv, rep, t, dh))?.reshape((hkv * rep, t, dh))?)
    }

    /// Attention output `[n, d]` for queries at `start..start+n`, in blocks of query rows so that no
    /// buffer larger than about [`SCORE_BLOCK_BYTES`] exists (each block's mask is built as it is used:
    /// keeping all of them would hold `n × T` floats for a time saving the capture benchmark could not
    /// measure).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, start: usize) -> Result<Tensor> {
        let (heads, n, dh) = q.dims3()?;
        let total = k.dim(1)?;
        let block = (SCORE_BLOCK_BYTES / (4 * heads * total)).clamp(1, 512);
        let mut outs = Vec::with_capacity(n.div_ceil(block));
        let mut r = 0;
        while r < n {
            let rows = block.min(n - r);
            let qb = q.narrow(1, r, rows)?;
            let positions: Vec<usize> = (start + r..start + r + rows).collect();
            let mask = mask_rows(&positions, total, self.config.sliding_window, q.device())?;
            let probs = attention_probs(&qb, k, self.scale(), &mask)?.to_dtype(v.dtype())?;
            outs.push(probs.matmul(v)?);
            r += rows;
        }
        let o = Tensor::cat(&outs, 1)?; // [H, n, dh]
        Ok(o.transpose(0, 1)?.reshape((n, heads * dh))?)
    }
}

