//! bf16 compute path: the custom convolution accepts bf16 and stays within bf16 precision of f32, with
//! either lowering (4 → 3 channels: input columns; 16 → 3: output columns).

use candle_core::{DType, Device, Tensor};
#[test]
fn bf16_convolution_is_close_to_f32() {
    for c in [4, 16] {
        let x = Tensor::rand(0f32, 1f32, (1, c, 8, 8), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        let w = Tensor::rand(0f32, 1f32, (3, c, 3, 3), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        let y = flmm_nn::conv::conv2d(&x, &w, None, 1).unwrap();
        let r = x.to_dtype(DType::F32).unwrap().conv2d(&w.to_dtype(DType::F32).unwrap(), 1, 1, 1, 1).unwrap();
        let d = (y.to_dtype(DType::F32).unwrap() - &r).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let m = r.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d / m < 2e-2, "{c} channels: bf16 relative error {}", d / m);
    }
}
