//! Exact attention-row capture: for the query positions of phrase tokens only,
//! `softmax(q_i·Kᵀ/√d + mask)` over all visible keys, per layer and head, then the image-key columns,
//! merged over each phrase's tokens. The full `[layers, heads, T, T]` attention is never formed: each
//! layer contributes `[heads, queries, keys]` for the phrase queries alone.

use candle_core::{DType, Tensor};

use crate::error::{LmmError, Result};

/// How a phrase's token rows are merged into one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Merge {
    /// Mean over the phrase's tokens (F-LMM's default).
    #[default]
    Mean,
    /// Element-wise max over the phrase's tokens.
    Max,
}

impl std::str::FromStr for Merge {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Merge::Mean),
            "max" => Ok(Merge::Max),
            other => Err(format!("unknown merge {other:?} (mean, max)")),
        }
    }
}

/// Which layers and heads to keep, and how to merge tokens. `None` keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Decoder layers to keep (ascending), or all.
    pub layers: Option<Vec<usize>>,
    /// Query heads to keep (ascending), or all.
    pub heads: Option<Vec<usize>>,
    /// Token merge.
    pub merge: Merge,
}

impl Capture {
    /// The kept layers, checked against the model's count.
    pub fn layer_list(&self, num_layers: usize) -> Result<Vec<usize>> {
        select(self.layers.as_deref(), num_layers, "layer")
    }

    /// The kept heads, checked against the model's count.
    pub fn head_list(&self, num_heads: usize) -> Result<Vec<usize>> {
        select(self.heads.as_deref(), num_heads, "head")
    }
}

fn select(chosen: Option<&[usize]>, count: usize, what: &str) -> Result<Vec<usize>> {
    match chosen {
        None => Ok((0..count).collect()),
        Some(list) => {
            if list.is_empty() {
                return Err(LmmError::BadText(format!("capture: the {what} list is empty")));
            }
            if let Some(bad) = list.iter().find(|&&i| i >= count) {
                return Err(LmmError::BadText(format!("capture: {what} {bad} does not exist (the model has {count})")));
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(LmmError::BadText(format!("capture: the {what} list must be strictly ascending")));
            }
            Ok(list.to_vec())
        }
    }
}

/// A capture request in absolute sequence positions, as the decoder consumes it.
#[derive(Debug, Clone)]
pub struct RowCapture {
    /// Query positions of each group (phrase); every group non-empty.
    pub groups: Vec<Vec<usize>>,
    /// Key positions whose columns are kept (the image tokens), in output order.
    pub keys: Vec<usize>,
    /// Layers kept (ascending).
    pub layers: Vec<usize>,
    /// Heads kept (ascending).
    pub heads: Vec<usize>,
    /// Token merge.
    pub merge: Merge,
}

/// Accumulates captured rows layer by layer; yields `[groups, layers·heads, keys]` (channel = l·H + h).
pub struct CaptureSink {
    request: RowCapture,
    /// Sorted, de-duplicated query positions of all groups.
    queries: Vec<usize>,
    /// Per group, the rows of its positions in `queries`.
    group_rows: Vec<Tensor>,
    key_index: Tensor,
    head_index: Tensor,
    /// per layer: per group `[heads, keys]`
    per_layer: Vec<Vec<Tensor>>,
}

impl CaptureSink {
    /// Prepares a sink for `request`.
    pub fn new(request: RowCapture, device: &candle_core::Device) -> Result<Self> {
        if let Some(i) = request.groups.iter().position(|g| g.is_empty()) {
            return Err(LmmError::BadText(format!("capture: phrase {i} has no tokens")));
        }
        let key_index = Tensor::from_vec(request.keys.iter().map(|&k| k as u32).collect::<Vec<_>>(), request.keys.len(), device)?;
        let head_index = Tensor::from_vec(request.heads.iter().map(|&h| h as u32).collect::<Vec<_>>(), request.heads.len(), device)?;
        let mut queries: Vec<usize> = request.groups.iter().flatten().copied().collect();
        queries.sort_unstable();
        queries.dedup();
        let group_rows = request
            .groups
            .iter()
            .map(|group| {
                let rows: Vec<u32> =
                    group.iter().map(|p| queries.binary_search(p).expect("group position is in the query list") as u32).collect();
                Tensor::from_vec(rows, group.len(), device)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { request, queries, group_rows, key_index, head_index, per_layer: Vec::new() })
    }

    /// Whether layer `layer` is captured.
    pub fn wants_layer(&self, layer: usize) -> bool {
        self.request.layers.binary_search(&layer).is_ok()
    }

    /// Sorted, de-duplicated query positions of all groups.
    pub fn query_positions(&self) -> &[usize] {
        &self.queries
    }

    /// Takes one layer's probabilities for [`CaptureSink::query_positions`], `[heads, queries, all keys]`
    /// (f32, already softmax-normalized over all visible keys), keeps the image keys and merges groups.
    pub fn push_layer(&mut self, probs: &Tensor) -> Result<()> {
        let kept = probs.index_select(&self.head_index, 0)?.index_select(&self.key_index, 2)?; // [h, q, k]
        let mut groups = Vec::with_capacity(self.group_rows.len());
        for idx in &self.group_rows {
            let sel = kept.index_select(idx, 1)?; // [h, n_k, k]
            let merged = match self.request.merge {
                Merge::Mean => sel.mean(1)?,
                Merge::Max => sel.max(1)?,
            };
            groups.push(merged);
        }
        self.per_layer.push(groups);
        Ok(())
    }

    /// `[groups, layers·heads, keys]`, channel = layer_index·heads + head_index.
    pub fn finish(self) -> Result<Tensor> {
        let n = self.request.groups.len();
        let mut per_group = Vec::with_capacity(n);
        for g in 0..n {
            let layers: Vec<&Tensor> = self.per_layer.iter().map(|l| &l[g]).collect();
            per_group.push(Tensor::cat(&layers, 0)?);
        }
        Ok(Tensor::stack(&per_group, 0)?)
    }
}

/// Additive attention mask `[n_queries, n_keys]` (0 visible, -inf hidden) for absolute query positions
/// `queries` against keys `0..n_keys`: causal, and within `window` when given: key `j` is visible from query `i` iff `0 ≤ i - j ≤ window`
/// (window + 1 keys, as transformers 4.39's eager Mistral mask).
pub fn mask_rows(queries: &[usize], n_keys: usize, window: Option<usize>, device: &candle_core::Device) -> Result<Tensor> {
    let mut data = vec![0f32; queries.len() * n_keys];
    for (r, &i) in queries.iter().enumerate() {
        for j in 0..n_keys {
            let hidden = j > i || window.is_some_and(|w| i - j > w);
            if hidden {
                data[r * n_keys + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(data, (queries.len(), n_keys), device)?)
}

/// `softmax(q·kᵀ·scale + mask)` in f32: q `[h, n, dh]`, k `[h, T, dh]` (kv heads already expanded),
/// mask `[n, T]`. The product is taken in q's dtype and the softmax in f32, as transformers' eager path.
pub fn attention_probs(q: &Tensor, k: &Tensor, scale: f64, mask: &Tensor) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let scores = scores.broadcast_add(mask)?;
    Ok(candle_nn::ops::softmax_last_dim(&scores)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mask_is_causal_and_windowed() {
        let m = mask_rows(&[0, 3], 5, Some(2), &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let visible = |row: &Vec<f32>| row.iter().map(|v| v.is_finite()).collect::<Vec<_>>();
        assert_eq!(visible(&m[0]), [true, false, false, false, false]);
        assert_eq!(visible(&m[1]), [false, true, true, true, false]);
    }

    #[test]
    fn merge_mean_and_max_over_group_rows() {
        let dev = Device::Cpu;
        // 1 head, 2 queries (positions 4 and 6), 3 keys total, keep keys 0 and 2.
        let probs = Tensor::new(&[[[0.1f32, 0.2, 0.7], [0.5, 0.3, 0.2]]], &dev).unwrap();
        for (merge, want) in [(Merge::Mean, [0.3f32, 0.45]), (Merge::Max, [0.5, 0.7])] {
            let req = RowCapture { groups: vec![vec![4, 6], vec![6]], keys: vec![0, 2], layers: vec![0], heads: vec![0], merge };
            let mut sink = CaptureSink::new(req, &dev).unwrap();
            sink.push_layer(&probs).unwrap();
            let out = sink.finish().unwrap().to_vec3::<f32>().unwrap();
            assert!((out[0][0][0] - want[0]).abs() < 1e-6 && (out[0][0][1] - want[1]).abs() < 1e-6, "{merge:?}: {out:?}");
            assert_eq!(out[1][0], vec![0.5, 0.2]);
        }
    }

    #[test]
    fn bad_selections_are_errors() {
        assert!(Capture { layers: Some(vec![5]), ..Default::default() }.layer_list(4).is_err());
        assert!(Capture { heads: Some(vec![]), ..Default::default() }.head_list(4).is_err());
        assert!(Capture { heads: Some(vec![2, 1]), ..Default::default() }.head_list(4).is_err());
        let req = RowCapture { groups: vec![vec![]], keys: vec![0], layers: vec![0], heads: vec![0], merge: Merge::Mean };
        assert!(CaptureSink::new(req, &Device::Cpu).is_err());
    }
}
