//! Small pieces shared by the SAM modules: linear layers and where their tensors come from (frozen
//! checkpoint tensors, or trainable copies registered in a [`ParamStore`]).

use candle_core::Tensor;
use flmm_nn::params::ParamStore;

use crate::error::HeadError;
use crate::sam::weights::SamWeights;

/// Source of module tensors: read-only for frozen modules, registered as trainable variables otherwise.
pub enum TensorSource<'a> {
    /// Tensors are used as they are.
    Frozen(&'a SamWeights),
    /// Tensors are copied into the store under their checkpoint key and returned as tracked variables.
    Trainable(&'a SamWeights, &'a mut ParamStore),
}

impl TensorSource<'_> {
    /// The tensor `key` with `shape`.
    pub fn get(&mut self, key: &str, shape: &[usize]) -> Result<Tensor, HeadError> {
        match self {
            TensorSource::Frozen(w) => w.get(key, shape),
            TensorSource::Trainable(w, store) => {
                let t = w.get(key, shape)?;
                Ok(store.insert(key, t)?.as_tensor().clone())
            }
        }
    }

    /// Whether tensors are registered as trainable variables.
    pub fn is_trainable(&self) -> bool {
        matches!(self, TensorSource::Trainable(..))
    }

    /// A non-trainable buffer (never registered in the store).
    pub fn buffer(&self, key: &str, shape: &[usize]) -> Result<Tensor, HeadError> {
        match self {
            TensorSource::Frozen(w) | TensorSource::Trainable(w, _) => w.get(key, shape),
        }
    }

    /// A linear layer `prefix.{weight [out, in], bias [out]}`.
    pub fn linear(&mut self, prefix: &str, input: usize, output: usize) -> Result<Linear, HeadError> {
        Ok(Linear { weight: self.get(&format!("{prefix}.weight"), &[output, input])?, bias: self.get(&format!("{prefix}.bias"), &[output])? })
    }

    /// A LayerNorm's `prefix.{weight, bias}` of width `dim`.
    pub fn norm(&mut self, prefix: &str, dim: usize) -> Result<(Tensor, Tensor), HeadError> {
        Ok((self.get(&format!("{prefix}.weight"), &[dim])?, self.get(&format!("{prefix}.bias"), &[dim])?))
    }
}

/// `y = x·Wᵀ + b` over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// Applies the layer to `x [.., in]` (one matrix product over all leading dimensions; the bias
    /// gradient is a column sum, see `flmm_nn::fused::add_bias`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let dims = x.dims();
        let (input, output) = (dims[dims.len() - 1], self.weight.dim(0)?);
        let rows = x.reshape(((), input))?.matmul(&self.weight.t()?)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("a linear input has a last dimension") = output;
        Ok(flmm_nn::fused::add_bias(&rows, &self.bias)?.reshape(out_dims)?)
    }
}

/// `lin_k(relu(… relu(lin_1(x))))`: SAM's MLP with ReLU between layers.
pub fn mlp(layers: &[Linear], x: &Tensor) -> Result<Tensor, HeadError> {
    let mut y = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        y = layer.forward(&y)?;
        if i + 1 < layers.len() {
            y = flmm_nn::act::relu(&y)?;
        }
    }
    Ok(y)
}
