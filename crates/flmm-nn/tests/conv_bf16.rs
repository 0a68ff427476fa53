//! bf16 compute path: the custom convolution accepts bf16 and stays within bf16 precision of f32 with
//! every lowering: im2col (8×8; 16 → 3 channels takes its weight gradient's columns from the output
//! gradient) and Winograd (32×32).

use candle_core::DType;
use flmm_nn::gradcheck::sample;

#[test]
fn bf16_convolution_is_close_to_f32() {
    for (c, side) in [(4, 8), (16, 8), (4, 32)] {
        let x = sample(&[1, c, side, side], 0.0, 1.0, 1).unwrap().to_dtype(DType::BF16).unwrap();
        let w = sample(&[3, c, 3, 3], 0.0, 1.0, 2).unwrap().to_dtype(DType::BF16).unwrap();
        let y = flmm_nn::conv::conv2d(&x, &w, None, 1).unwrap();
        let r = x.to_dtype(DType::F32).unwrap().conv2d(&w.to_dtype(DType::F32).unwrap(), 1, 1, 1, 1).unwrap();
        let d = (y.to_dtype(DType::F32).unwrap() - &r).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let m = r.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d / m < 2e-2, "{c} channels at {side}x{side}: bf16 relative error {}", d / m);
    }
}
