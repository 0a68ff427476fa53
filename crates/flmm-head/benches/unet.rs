//! U-Net forward+backward time on CPU for the DeepSeek-VL-1.3B (C=384) and LLaVA-1.5 (C=1024)
//! shapes (24×24 attention → 64×64 logits), with the ratio to PyTorch measured in the same run when
//! `python3` can import torch (tools/bench/unet_torch.py). Run: `cargo bench -p flmm-head --bench unet`.

use candle_core::{DType, Device, Tensor};
use flmm_head::{UNetConfig, UNetHead};
use std::time::Instant;

const ITERS: usize = 5;
const SHAPES: [(usize, &str); 2] = [(384, "DeepSeek-VL-1.3B"), (1024, "LLaVA-1.5-7B")];

fn median_seconds(channels: usize) -> f64 {
    let head = UNetHead::new(UNetConfig { in_channels: channels, ..Default::default() }, 0, &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1f32, (1, channels, 24, 24), &Device::Cpu).unwrap();
    let mut times: Vec<f64> = (0..ITERS + 2)
        .map(|_| {
            let t = Instant::now();
            let grads = head.forward(&x, DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
            drop(grads);
            t.elapsed().as_secs_f64()
        })
        .skip(2)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

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
    println!("U-Net head forward+backward, batch 1, 24x24 -> 64x64, median of {ITERS} (CPU, {} threads)", rayon_threads());
    let ours: Vec<f64> = SHAPES.iter().map(|(c, _)| median_seconds(*c)).collect();
    let torch = torch_seconds();
    if torch.is_none() {
        println!("(PyTorch not importable by python3: no reference ratio)");
    }
    for (i, (c, name)) in SHAPES.iter().enumerate() {
        match &torch {
            Some(t) => println!("{name:<18} C={c:<5} flmm {:>7.1} ms   torch {:>7.1} ms   ratio {:.2}", ours[i] * 1e3, t[i] * 1e3, ours[i] / t[i]),
            None => println!("{name:<18} C={c:<5} flmm {:>7.1} ms", ours[i] * 1e3),
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
