//! U-Net forward+backward time on CPU for the DeepSeek-VL-1.3B (C=384) and LLaVA-1.5 (C=1024)
//! shapes (24×24 attention → 64×64 logits), with the ratio to PyTorch measured in the same run when
//! `python3` can import torch (tools/bench/unet_torch.py). Run: `cargo bench -p flmm-head --bench unet`.
//!
//! The two are measured in alternating rounds (flmm, then torch, [`ROUNDS`] times) and each round gives
//! a ratio; the medians over the rounds are printed. On a shared machine whose speed drifts by ±20 %
//! from minute to minute, a ratio of two measurements taken seconds apart is far steadier than either
//! time alone.

use candle_core::{DType, Device, Tensor};
use flmm_head::{UNetConfig, UNetHead};
use std::time::Instant;

const ITERS: usize = 5;
const ROUNDS: usize = 5;
const SHAPES: [(usize, &str); 2] = [(384, "DeepSeek-VL-1.3B"), (1024, "LLaVA-1.5-7B")];

/// The median over `ITERS` timed steps (after 2 warm-up steps) of one forward+backward.
fn median_seconds(head: &UNetHead, x: &Tensor) -> f64 {
    let mut times: Vec<f64> = (0..ITERS + 2)
        .map(|_| {
            let t = Instant::now();
            let grads = head.forward(x, DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
            drop(grads);
            t.elapsed().as_secs_f64()
        })
        .skip(2)
        .collect();
    median(&mut times)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// PyTorch's median times for every shape (one process, same iteration count), or `None` without torch.
fn torch_seconds() -> Option<Vec<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bench/unet_torch.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).arg("--iters").arg(ITERS.to_string());
    for (c, _) in SHAPES {
        cmd.arg(c.to_string());
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["median_s"].as_f64())
        .collect()
}

fn main() {
    flmm_nn::runtime::tune_process();
    println!(
        "U-Net head forward+backward, batch 1, 24x24 -> 64x64, median of {ITERS} per round, {ROUNDS} rounds (CPU, {} threads)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let heads: Vec<(UNetHead, Tensor)> = SHAPES
        .iter()
        .map(|(c, _)| {
            let head = UNetHead::new(UNetConfig { in_channels: *c, ..Default::default() }, 0, &Device::Cpu).unwrap();
            (head, Tensor::rand(0f32, 1f32, (1, *c, 24, 24), &Device::Cpu).unwrap())
        })
        .collect();
    // Per shape: flmm's time, torch's time and their ratio in every round.
    let mut ours = vec![Vec::new(); SHAPES.len()];
    let mut torch = vec![Vec::new(); SHAPES.len()];
    let mut ratios = vec![Vec::new(); SHAPES.len()];
    for _ in 0..ROUNDS {
        let round: Vec<f64> = heads.iter().map(|(head, x)| median_seconds(head, x)).collect();
        let reference = torch_seconds();
        for (i, t) in round.iter().enumerate() {
            ours[i].push(*t);
            if let Some(r) = &reference {
                torch[i].push(r[i]);
                ratios[i].push(t / r[i]);
            }
        }
        if reference.is_none() {
            println!("(PyTorch not importable by python3: no reference ratio)");
            break;
        }
    }
    for (i, (c, name)) in SHAPES.iter().enumerate() {
        let flmm_ms = median(&mut ours[i]) * 1e3;
        if ratios[i].is_empty() {
            println!("{name:<18} C={c:<5} flmm {flmm_ms:>7.1} ms");
        } else {
            let (lo, hi) = (ratios[i].iter().cloned().fold(f64::INFINITY, f64::min), ratios[i].iter().cloned().fold(0.0, f64::max));
            println!(
                "{name:<18} C={c:<5} flmm {flmm_ms:>7.1} ms   torch {:>7.1} ms   ratio {:.2} (rounds {lo:.2}–{hi:.2})",
                median(&mut torch[i]) * 1e3,
                median(&mut ratios[i])
            );
        }
    }
}
