"""PyTorch reference timing for `cargo bench -p flmm-head --bench unet` (optional; run by the bench).

Builds F-LMM's UNetHead in plain PyTorch (same layers as mmseg's UNet with GroupNorm(1) and
InterpConv: the compute is identical) and prints one JSON line per shape with the median
forward+backward time in seconds. Usage: python unet_torch.py --iters 5 384 1024
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_module(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(1, cout), nn.ReLU(inplace=True))


class UNetHead(nn.Module):
    def __init__(self, c, base=64, stages=4):
        super().__init__()
        ch = [base << i for i in range(stages)]
        self.enc = nn.ModuleList(
            [nn.Sequential(conv_module(c, ch[0], 3), conv_module(ch[0], ch[0], 3))]
            + [nn.Sequential(nn.MaxPool2d(2), conv_module(ch[i - 1], ch[i], 3), conv_module(ch[i], ch[i], 3)) for i in range(1, stages)]
        )
        self.up = nn.ModuleList([conv_module(ch[i + 1], ch[i], 1) for i in range(stages - 1)])
        self.dec = nn.ModuleList([nn.Sequential(conv_module(2 * ch[i], ch[i], 3), conv_module(ch[i], ch[i], 3)) for i in range(stages - 1)])
        self.seg = nn.Conv2d(base, 1, 1)

    def forward(self, x):
        x = x / x.sum((-2, -1), keepdim=True).clamp(min=1e-12)
        s = max(1.0, 64 / max(x.shape[-2:]))
        x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        for i in reversed(range(len(self.dec))):
            up = self.up[i](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            x = self.dec[i](torch.cat([skips[i], up], 1))
        return self.seg(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("channels", type=int, nargs="+")
    p.add_argument("--grid", type=int, default=24)
    p.add_argument("--iters", type=int, default=5)
    a = p.parse_args()
    for c in a.channels:
        model = UNetHead(c)
        x = torch.rand(1, c, a.grid, a.grid)
        times = []
        for i in range(a.iters + 2):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            model(x).sum().backward()
            if i >= 2:
                times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({"channels": c, "median_s": times[len(times) // 2], "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
