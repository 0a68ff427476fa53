//! Finite-difference gradient checks: the proof that an op's backward is right.
//!
//! Run the function in f64, compare candle's autograd gradient of a scalar output with central
//! differences `(f(x+h) − f(x−h)) / 2h` at a sample of coordinates of every input.

use candle_core::{DType, Result, Tensor, Var};

/// Largest error found, as `|analytic − numeric| / max(1, |numeric|)` over the checked coordinates.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// The worst error.
    pub max_error: f64,
    /// How many coordinates were checked.
    pub checked: usize,
}

/// Compares autograd with central differences for a scalar-valued `f` at `inputs` (converted to f64).
///
/// At most `per_input` coordinates of each input are checked, spread evenly over the tensor.
pub fn check<F>(f: F, inputs: &[Tensor], step: f64, per_input: usize) -> Result<GradCheck>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let inputs: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(DType::F64)).collect::<Result<_>>()?;
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let as_tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&as_tensors)?;
    if out.elem_count() != 1 {
        candle_core::bail!("gradcheck needs a scalar output, got shape {:?}", out.shape());
    }
    let grads = out.sum_all()?.backward()?;
    let mut max_error = 0f64;
    let mut checked = 0;
    for (i, var) in vars.iter().enumerate() {
        let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; var.elem_count()],
        };
        let base: Vec<f64> = inputs[i].flatten_all()?.to_vec1()?;
        let n = base.len();
        let stride = (n / per_input.max(1)).max(1);
        for idx in (0..n).step_by(stride).take(per_input) {
            let eval_at = |delta: f64| -> Result<f64> {
                let mut moved = base.clone();
                moved[idx] += delta;
                let moved = Tensor::from_vec(moved, inputs[i].shape(), inputs[i].device())?;
                let mut args = inputs.clone();
                args[i] = moved;
                f(&args)?.sum_all()?.to_scalar::<f64>()
            };
            let numeric = (eval_at(step)? - eval_at(-step)?) / (2.0 * step);
            let err = (analytic[idx] - numeric).abs() / numeric.abs().max(1.0);
            max_error = max_error.max(err);
            checked += 1;
        }
    }
    Ok(GradCheck { max_error, checked })
}

/// A fixed pseudo-random f64 tensor of `shape`, values in `[lo, hi)`: test inputs without a device RNG.
pub fn sample(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Result<Tensor> {
    let mut rng = crate::rng::Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// Weighted sum `Σ w·y` with fixed pseudo-random weights: turns a tensor output into a scalar whose
/// gradient exercises every output element differently.
pub fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
    let w = sample(y.dims(), -1.0, 1.0, seed)?.to_dtype(y.dtype())?;
    (y * w)?.sum_all()
}
