//! SAM ViT-B image encoder on one 1024×1024 image (random weights, real dimensions), CPU, with the
//! ratio to segment-anything's PyTorch encoder measured in the same run when `python3` can import torch
//! and segment_anything (tools/bench/sam_torch.py); and the time the embedding cache saves per epoch.
//! Run: `cargo bench -p flmm-head --bench sam`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use flmm_head::sam::cache::EmbeddingCache;
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};

const ITERS: usize = 2;
/// Images per epoch of F-LMM's training mix is ~190K samples; report per 1,000 images.
const EPOCH_IMAGES: f64 = 1000.0;

fn random_vit_b() -> Sam {
    let weights = SamWeights::synthetic(Box::new(|key: &str, shape: &[usize]| {
        let is_norm_weight = key.ends_with(".weight") && shape.len() == 1;
        if is_norm_weight {
            Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
        } else {
            (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * 0.02).unwrap()
        }
    }));
    Sam::build(&weights, &EncoderConfig::Vit(VitConfig::vit_b()), MaskDecoderConfig::default()).unwrap()
}

fn torch_seconds() -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bench/sam_torch.py");
    let out = std::process::Command::new("python3").arg(script).arg("--iters").arg(ITERS.to_string()).output().ok().filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["median_s"].as_f64())
}

fn main() {
    flmm_nn::runtime::tune_process();
    let sam = random_vit_b();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 1024, 1024), &Device::Cpu).unwrap();
    sam.image_encoder.forward(&x).unwrap(); // warm-up
    let mut times: Vec<f64> = (0..ITERS)
        .map(|_| {
            let start = Instant::now();
            sam.image_encoder.forward(&x).unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let ours = times[times.len() / 2];
    println!("SAM ViT-B image encoder, 1x3x1024x1024, f32, CPU ({} threads), median of {ITERS}", std::thread::available_parallelism().map_or(1, |n| n.get()));
    match torch_seconds() {
        Some(t) => println!("flmm {ours:.2} s   torch {t:.2} s   ratio {:.2}", ours / t),
        None => println!("flmm {ours:.2} s   (PyTorch / segment_anything not importable by python3: no reference ratio)"),
    }

    let tmp = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::new(tmp.path(), &sam);
    let image = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let first = Instant::now();
    cache.get_or_compute(&sam, &image, &Device::Cpu).unwrap();
    let miss = first.elapsed().as_secs_f64();
    let mut hits: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            assert!(cache.get_or_compute(&sam, &image, &Device::Cpu).unwrap().hit);
            start.elapsed().as_secs_f64()
        })
        .collect();
    hits.sort_by(f64::total_cmp);
    let hit = hits[2];
    println!(
        "embedding cache: miss (preprocess + encode + store) {miss:.2} s, hit {:.1} ms → per epoch of {EPOCH_IMAGES} images {:.0} s instead of {:.0} s (saves {:.0} s, {:.0}x)",
        hit * 1e3,
        hit * EPOCH_IMAGES,
        miss * EPOCH_IMAGES,
        (miss - hit) * EPOCH_IMAGES,
        miss / hit
    );
}
