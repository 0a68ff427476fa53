use candle_core::{DType, Device, Tensor, Var};
use flmm_head::{UNetConfig, UNetHead};
fn time<F: FnMut()>(name: &str, mut f: F) { f(); let t = std::time::Instant::now(); for _ in 0..3 { f(); } println!("{name}: {:?}", t.elapsed() / 3); }
fn main() {
    let c: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(384);
    let dev = Device::Cpu;
    if std::env::args().nth(2).as_deref() == Some("unet") {
        let head = UNetHead::new(UNetConfig { in_channels: c, ..Default::default() }, 0, &dev).unwrap();
        let x = Tensor::rand(0f32, 1f32, (1, c, 24, 24), &dev).unwrap();
        time("unet fwd", || { head.forward(&x, DType::F32).unwrap(); });
        time("prep", || { head.prepare_input(&x).unwrap(); });
        let y = Tensor::rand(0f32, 1f32, (1, 64, 64, 64), &dev).unwrap();
        let w2 = Tensor::rand(0f32, 1f32, (64, 64, 3, 3), &dev).unwrap();
        time("conv64 fwd", || { flmm_nn::conv::conv2d(&y, &w2, None, 1).unwrap(); });
        let gw = Tensor::ones(64, DType::F32, &dev).unwrap(); let gb = Tensor::zeros(64, DType::F32, &dev).unwrap();
        time("gn fwd", || { flmm_nn::norm::group_norm(&y, 1, &gw, &gb, 1e-5).unwrap(); });
        time("relu fwd", || { flmm_nn::act::relu(&y).unwrap(); });
        time("pool fwd", || { flmm_nn::pool::max_pool2x2(&y).unwrap(); });
        let z = Tensor::rand(0f32, 1f32, (1, 512, 8, 8), &dev).unwrap();
        time("resize 512x8->16", || { flmm_nn::resize::resize_bilinear_to(&z, 16, 16).unwrap(); });
        time("unet fwd+bwd", || { head.forward(&x, DType::F32).unwrap().sum_all().unwrap().backward().unwrap(); });
        return;
    }
    let x = Tensor::rand(0f32, 1f32, (1, c, 64, 64), &dev).unwrap();
    let w = Var::from_tensor(&Tensor::rand(0f32, 1f32, (64, c, 3, 3), &dev).unwrap()).unwrap();
    let a = Tensor::rand(0f32, 1f32, (64, c*9), &dev).unwrap();
    let b = Tensor::rand(0f32, 1f32, (1, c*9, 4096), &dev).unwrap();
    time("matmul", || { a.broadcast_matmul(&b).unwrap(); });
    let b2 = b.squeeze(0).unwrap();
    time("matmul2d", || { a.matmul(&b2).unwrap(); });
    let bt = b2.t().unwrap().contiguous().unwrap(); let at = a.t().unwrap().contiguous().unwrap();
    time("matmul2d_T", || { bt.matmul(&at).unwrap(); });
    time("matmul2d_Tview", || { b2.t().unwrap().matmul(&a.t().unwrap()).unwrap(); });
    let a64 = Tensor::rand(0f32, 1f32, (64, 576), &dev).unwrap();
    let b64 = Tensor::rand(0f32, 1f32, (576, 4096), &dev).unwrap();
    time("64x576x4096", || { a64.matmul(&b64).unwrap(); });
    time("64x576x4096 Tview", || { b64.t().unwrap().matmul(&a64.t().unwrap()).unwrap(); });
    let b64t = b64.t().unwrap().contiguous().unwrap();
    time("64x576x4096 Tcontig", || { b64t.matmul(&a64.t().unwrap()).unwrap(); });
    let big1 = Tensor::rand(0f32, 1f32, (2048, 2048), &dev).unwrap();
    time("sq2048", || { big1.matmul(&big1).unwrap(); });
    let xp = x.pad_with_zeros(2,1,1).unwrap().pad_with_zeros(3,1,1).unwrap();
    time("stack", || { let mut t=vec![]; for dy in 0..3 { for dx in 0..3 { t.push(xp.narrow(2,dy,64).unwrap().narrow(3,dx,64).unwrap()); } } Tensor::stack(&t,2).unwrap(); });
    time("conv fwd", || { flmm_nn::conv::conv2d(&x, w.as_tensor(), None, 1).unwrap(); });
    time("conv fwd+bwd", || { flmm_nn::conv::conv2d(&x, w.as_tensor(), None, 1).unwrap().sum_all().unwrap().backward().unwrap(); });
    let y = Var::from_tensor(&Tensor::rand(0f32, 1f32, (1, 64, 64, 64), &dev).unwrap()).unwrap();
    let gw = Var::from_tensor(&Tensor::ones(64, DType::F32, &dev).unwrap()).unwrap();
    let gb = Var::from_tensor(&Tensor::zeros(64, DType::F32, &dev).unwrap()).unwrap();
    time("gn fwd+bwd", || { flmm_nn::norm::group_norm(y.as_tensor(), 1, gw.as_tensor(), gb.as_tensor(), 1e-5).unwrap().sum_all().unwrap().backward().unwrap(); });
    let w2 = Var::from_tensor(&Tensor::rand(0f32, 1f32, (64, 64, 3, 3), &dev).unwrap()).unwrap();
    time("conv64 fwd+bwd", || { flmm_nn::conv::conv2d(y.as_tensor(), w2.as_tensor(), None, 1).unwrap().sum_all().unwrap().backward().unwrap(); });
    time("pool fwd+bwd", || { flmm_nn::pool::max_pool2x2(y.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap(); });
    let head = UNetHead::new(UNetConfig { in_channels: c, ..Default::default() }, 0, &dev).unwrap();
    let x = Tensor::rand(0f32, 1f32, (1, c, 24, 24), &dev).unwrap();
    time("unet fwd", || { head.forward(&x, DType::F32).unwrap(); });
    time("unet fwd+bwd", || { head.forward(&x, DType::F32).unwrap().sum_all().unwrap().backward().unwrap(); });
}
