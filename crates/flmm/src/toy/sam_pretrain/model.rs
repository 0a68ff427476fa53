//! The toy refiner's architecture: a SAM small enough to pretrain on two CPU cores in minutes, with a
//! low-resolution mask as fine as the 128-px toy scenes.

use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::{EncoderConfig, Sam};

/// The toy SAM's image encoder: 256-px input (a 128-px scene resized ×2 by `ResizeLongestSide`), 8-px
/// patches → a 32×32 embedding, so the decoder's 4× mask (128×128) has the scene's resolution.
pub fn toy_vit() -> VitConfig {
    VitConfig { img_size: 256, patch_size: 8, embed_dim: 64, depth: 4, heads: 4, global_blocks: vec![], window: 8, out_chans: 64 }
}

/// The toy SAM's mask decoder (and prompt encoder). Two heads, so that the cross-attention heads
/// (half width) are 16 wide as in SAM; the exported file records the count in its metadata.
pub fn toy_decoder() -> MaskDecoderConfig {
    MaskDecoderConfig { dim: 64, depth: 2, heads: 2, mlp_dim: 256, multimask_outputs: 3 }
}

/// A freshly initialized, fully trainable toy SAM (deterministic from `seed`).
pub fn fresh_toy_sam(seed: u64) -> candle_core::Result<Sam> {
    let weights = flmm_head::sam::init::random_weights(seed);
    Sam::build_trainable(&weights, &EncoderConfig::Vit(toy_vit()), toy_decoder()).map_err(|e| candle_core::Error::Msg(e.to_string()))
}
