//! Per-layer cost of flmm's stride-1 convolution at the U-Net head's 3×3 shapes (base 64, 64×64 input):
//! forward and forward+backward time and GFLOP/s, batch 1, CPU. It tells which layers hold the U-Net
//! bench's time (`cargo bench -p flmm-head --bench unet`). Run: `cargo bench -p flmm-nn --bench conv`.

use candle_core::{Device, Tensor, Var};
use std::time::Instant;

const ITERS: usize = 9;

/// `(in channels, out channels, side, input needs a gradient)`: the first layer at the DeepSeek-VL-1.3B
/// and LLaVA-1.5 widths (its input is the frozen attention), then the encoder and decoder layers.
const LAYERS: [(usize, usize, usize, bool); 11] = [
    (384, 64, 64, false),
    (1024, 64, 64, false),
    (64, 64, 64, true),
    (64, 128, 32, true),
    (128, 128, 32, true),
    (128, 256, 16, true),
    (256, 512, 8, true),
    (512, 512, 8, true),
    (512, 256, 16, true),
    (256, 128, 32, true),
    (128, 64, 64, true),
];

fn main() {
    flmm_nn::runtime::tune_process();
    println!("conv2d 3x3 pad 1, batch 1, median of {ITERS} (CPU)");
    for (ci, co, side, input_grad) in LAYERS {
        let x = Tensor::rand(0f32, 1f32, (1, ci, side, side), &Device::Cpu).unwrap();
        let x = if input_grad { Var::from_tensor(&x).unwrap().as_tensor().clone() } else { x };
        let w = Var::from_tensor(&Tensor::rand(-0.1f32, 0.1f32, (co, ci, 3, 3), &Device::Cpu).unwrap()).unwrap();
        let mut times: Vec<(f64, f64)> = (0..ITERS)
            .map(|_| {
                let start = Instant::now();
                let y = flmm_nn::conv::conv2d(&x, w.as_tensor(), None, 1).unwrap();
                let forward = start.elapsed().as_secs_f64();
                drop(y.sum_all().unwrap().backward().unwrap());
                (forward, start.elapsed().as_secs_f64())
            })
            .collect();
        times.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (forward, total) = times[ITERS / 2];
        let gflop = (ci * co * 9 * side * side * 2) as f64 / 1e9;
        let passes = if input_grad { 3.0 } else { 2.0 };
        println!(
            "{ci:>5} -> {co:<4} {side:>2}x{side:<2} fwd {:6.1} ms ({:4.0} GFLOP/s)   fwd+bwd {:6.1} ms ({:4.0} GFLOP/s)",
            forward * 1e3,
            gflop / forward,
            total * 1e3,
            gflop * passes / total
        );
    }
}
