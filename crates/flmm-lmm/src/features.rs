//! From captured rows to F-LMM's attention stacks: reshape the image-key columns to the image grid,
//! and for LLaVA-NeXT resize coarse and fine maps to the fine grid and concatenate them (spec §2.3).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::llava::ImageLayout;

/// A LLaVA-NeXT capture split into its two grids.
pub struct CoarseFine {
    /// `[N, C, g, g]`.
    pub coarse: Tensor,
    /// `[N, C, fh, fw]` (newline column dropped).
    pub fine: Tensor,
}

/// Splits `[N, C, g² + fh·(fw+1)]` rows into the coarse and fine maps.
pub fn split_coarse_fine(rows: &Tensor, coarse: usize, fine_h: usize, fine_w: usize) -> Result<CoarseFine> {
    let (n, c, _) = rows.dims3()?;
    let g2 = coarse * coarse;
    let coarse_map = rows.narrow(2, 0, g2)?.reshape((n, c, coarse, coarse))?;
    let fine = rows
        .narrow(2, g2, fine_h * (fine_w + 1))?
        .reshape((n, c, fine_h, fine_w + 1))?
        .narrow(3, 0, fine_w)?
        .contiguous()?;
    Ok(CoarseFine { coarse: coarse_map, fine })
}

/// The U-Net input `[N, C', h, w]` (f32) for captured rows `[N, C, n_image_tokens]`: the grid itself
/// (LLaVA-1.5), or `cat(bilinear(coarse → fine size), bilinear(fine → fine size))` with `C' = 2C`
/// (LLaVA-NeXT; resizing to its own size is the identity, as in PyTorch).
pub fn attention_maps(rows: &Tensor, layout: ImageLayout) -> Result<Tensor> {
    let rows = rows.to_dtype(DType::F32)?;
    let (n, c, _) = rows.dims3()?;
    match layout {
        ImageLayout::Grid { side } => Ok(rows.reshape((n, c, side, side))?),
        ImageLayout::CoarseFine { coarse, fine_h, fine_w } => {
            let parts = split_coarse_fine(&rows, coarse, fine_h, fine_w)?;
            let coarse = flmm_nn::resize::resize_bilinear_to(&parts.coarse, fine_h, fine_w)?;
            let fine = flmm_nn::resize::resize_bilinear_to(&parts.fine, fine_h, fine_w)?;
            Ok(Tensor::cat(&[&coarse, &fine], 1)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn coarse_fine_split_drops_the_newline_column() {
        // 1 phrase, 1 channel, coarse 2×2 = 4 tokens, fine 2 × (3+1) = 8 tokens.
        let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let rows = Tensor::from_vec(v, (1, 1, 12), &Device::Cpu).unwrap();
        let p = split_coarse_fine(&rows, 2, 2, 3).unwrap();
        assert_eq!(p.coarse.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0., 1., 2., 3.]);
        assert_eq!(p.fine.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4., 5., 6., 8., 9., 10.]);
        let maps = attention_maps(&rows, ImageLayout::CoarseFine { coarse: 2, fine_h: 2, fine_w: 3 }).unwrap();
        assert_eq!(maps.dims(), [1, 2, 2, 3]);
    }
}
