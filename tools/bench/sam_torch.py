"""PyTorch reference timing for the SAM ViT-B image encoder (optional; for a Rust bench to call).

Builds segment_anything 1.0's real-size ViT-B `ImageEncoderViT` (embed 768, depth 12, 12 heads,
global attention at blocks 2/5/8/11, window 14, img 1024, patch 16, rel pos, LayerNorm eps 1e-6,
out_chans 256) with random weights (seeded), float32, eval, no_grad, and prints one JSON line per
image size with the median forward time in seconds over --iters runs (after --warmup runs).
Usage: python sam_torch.py --iters 5 [--warmup 1] [--threads N] [1024 ...]
(--threads: torch.set_num_threads(N); default: torch's default, as unet_torch.py).
"""
import argparse
import json
import time
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT


def vit_b(img_size: int) -> ImageEncoderViT:
    # the ViT-B configuration of segment_anything.build_sam.build_sam_vit_b
    return ImageEncoderViT(
        depth=12, embed_dim=768, img_size=img_size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=16, qkv_bias=True,
        use_rel_pos=True, global_attn_indexes=[2, 5, 8, 11], window_size=14, out_chans=256,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("img_size", type=int, nargs="*", default=[1024])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for size in a.img_size:
        model = vit_b(size).float().eval()
        with torch.no_grad():
            for prm in model.parameters():  # random weights (rel_pos / pos_embed are zero-initialised otherwise)
                prm.normal_(0.0, 0.02)
        x = torch.randn(1, 3, size, size)
        times = []
        with torch.no_grad():
            for i in range(a.warmup + a.iters):
                t = time.perf_counter()
                y = model(x)
                if i >= a.warmup:
                    times.append(time.perf_counter() - t)
        assert tuple(y.shape) == (1, 256, size // 16, size // 16)
        times.sort()
        print(json.dumps({"model": "sam_vit_b_image_encoder", "img_size": size, "median_s": times[len(times) // 2],
                          "iters": a.iters, "threads": torch.get_num_threads(), "torch": torch.__version__}),
              flush=True)


if __name__ == "__main__":
    main()
