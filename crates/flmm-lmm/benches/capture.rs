//! Attention-row capture cost: peak extra memory and forward time with capture vs without, against what
//! the full `[layers, heads, T, T]` attentions of an `output_attentions=True` pass would take.
//!
//! A random-weight LLaMA-style decoder (the numbers depend on shapes, not on values) runs one pass over
//! 2,048 image tokens + a prompt + a caption with 40 phrase tokens. Memory is measured with a counting
//! global allocator: the peak of live heap bytes during the pass, minus the peak of the same pass
//! without capture.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use flmm_lmm::capture::{CaptureSink, Merge, RowCapture};
use flmm_lmm::config::{DecoderKind, TextConfig};
use flmm_lmm::decoder::{Decoder, DecoderKeys, ForwardRequest, KvCache};
use flmm_lmm::model_dir::Weights;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const IMAGE_TOKENS: usize = 2048;
const PROMPT_BEFORE: usize = 5;
const PROMPT_AFTER: usize = 15;
const PHRASES: usize = 8;
const TOKENS_PER_PHRASE: usize = 5;
const GAP: usize = 3;

fn config() -> TextConfig {
    TextConfig {
        kind: DecoderKind::Llama,
        vocab_size: 1000,
        hidden_size: 512,
        intermediate_size: 1376,
        num_hidden_layers: 8,
        num_attention_heads: 16,
        num_key_value_heads: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: 4096,
        sliding_window: None,
        eos_token_id: Some(2),
        tie_word_embeddings: false,
    }
}

fn random_weights(c: &TextConfig, dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dev = Device::Cpu;
    let d = c.hidden_size;
    let kv = c.num_key_value_heads * c.head_dim();
    let m = c.intermediate_size;
    let mut tensors = std::collections::HashMap::new();
    let mut put = |k: String, shape: &[usize]| -> anyhow::Result<()> {
        let t = if k.ends_with("norm.weight") { Tensor::ones(shape, DType::F32, &dev)? } else { (Tensor::randn(0f32, 1.0, shape, &dev)? * 0.02)? };
        tensors.insert(k, t);
        Ok(())
    };
    put("m.embed_tokens.weight".into(), &[c.vocab_size, d])?;
    put("m.norm.weight".into(), &[d])?;
    put("lm_head.weight".into(), &[c.vocab_size, d])?;
    for i in 0..c.num_hidden_layers {
        let l = format!("m.layers.{i}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![d]),
            ("post_attention_layernorm.weight", vec![d]),
            ("self_attn.q_proj.weight", vec![d, d]),
            ("self_attn.k_proj.weight", vec![kv, d]),
            ("self_attn.v_proj.weight", vec![kv, d]),
            ("self_attn.o_proj.weight", vec![d, d]),
            ("mlp.gate_proj.weight", vec![m, d]),
            ("mlp.up_proj.weight", vec![m, d]),
            ("mlp.down_proj.weight", vec![d, m]),
        ] {
            put(format!("{l}.{name}"), &shape)?;
        }
    }
    let path = dir.join("decoder.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    Ok(path)
}

fn main() -> anyhow::Result<()> {
    flmm_nn::runtime::tune_process();
    let c = config();
    let tmp = tempfile::tempdir()?;
    let file = random_weights(&c, tmp.path())?;
    let weights = Weights::open(&[file], tmp.path(), DType::F32, &Device::Cpu)?;
    let keys = DecoderKeys { model: "m".into(), lm_head: "lm_head".into() };
    let decoder = Decoder::load(&weights, &keys, &c)?;
    let caption = PHRASES * (TOKENS_PER_PHRASE + GAP);
    let t = PROMPT_BEFORE + IMAGE_TOKENS + PROMPT_AFTER + caption;
    let embeds = (Tensor::randn(0f32, 1.0, (t, c.hidden_size), &Device::Cpu)? * 0.02)?;
    let caption_start = PROMPT_BEFORE + IMAGE_TOKENS + PROMPT_AFTER;
    let groups: Vec<Vec<usize>> = (0..PHRASES)
        .map(|k| (0..TOKENS_PER_PHRASE).map(|i| caption_start + k * (TOKENS_PER_PHRASE + GAP) + i).collect())
        .collect();
    let phrase_tokens: usize = groups.iter().map(Vec::len).sum();
    let run = |capture: bool| -> anyhow::Result<(f64, usize)> {
        let sink = if capture {
            let request = RowCapture {
                groups: groups.clone(),
                keys: (PROMPT_BEFORE..PROMPT_BEFORE + IMAGE_TOKENS).collect(),
                layers: (0..c.num_hidden_layers).collect(),
                heads: (0..c.num_attention_heads).collect(),
                merge: Merge::Mean,
            };
            Some(CaptureSink::new(request, &Device::Cpu)?)
        } else {
            None
        };
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        let out = decoder.forward(&embeds, &mut KvCache::default(), ForwardRequest { capture: sink, ..Default::default() })?;
        let seconds = start.elapsed().as_secs_f64();
        let peak = PEAK.load(Ordering::Relaxed) - base;
        drop(out);
        Ok((seconds, peak))
    };
    run(false)?; // warm-up
    let mut plain = Vec::new();
    let mut captured = Vec::new();
    for _ in 0..3 {
        plain.push(run(false)?);
        captured.push(run(true)?);
    }
    let median = |v: &mut Vec<(f64, usize)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (t_plain, m_plain) = median(&mut plain);
    let (t_capture, m_capture) = median(&mut captured);
    let extra = m_capture.saturating_sub(m_plain);
    let full = c.num_hidden_layers * c.num_attention_heads * t * t * 4;
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "decoder {} layers × {} heads, T = {t} tokens ({IMAGE_TOKENS} image, {phrase_tokens} phrase tokens in {PHRASES} phrases), f32, CPU",
        c.num_hidden_layers, c.num_attention_heads
    );
    println!("peak heap during the pass: without capture {:.1} MiB, with capture {:.1} MiB", mib(m_plain), mib(m_capture));
    println!(
        "capture extra memory {:.2} MiB; full [L,H,T,T] attentions would need {:.1} MiB (f32) → ratio {:.3}% (must be < 5%)",
        mib(extra),
        mib(full),
        100.0 * extra as f64 / full as f64
    );
    println!("forward time: without capture {:.3} s, with capture {:.3} s (ratio {:.3})", t_plain, t_capture, t_capture / t_plain);
    Ok(())
}
