"""Real-ESRGAN's architectures in PyTorch, for bench/bench_upscale.py's side-by-side run on the same CPU.

Written for this benchmark from the published descriptions of the two networks (ESRGAN's
residual-in-residual dense blocks with nearest ×2 upsamplings; the compact VGG-style net with PReLU
and a pixel shuffle), in NCHW as PyTorch runs them, with torch's default random initialization:
only the time matters here (the golden tests check nbkit's numbers against basicsr's code). Runs in
the benchmark-only venv made by setup_esrgan_torch.sh; prints one JSON line.

    bench/peers/.venv-esrgan-torch/bin/python bench/peers/esrgan_torch.py --model x4plus --batch 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = {   # (kind, features, blocks or convs, growth, scale), the released files' sizes
    "x4plus": ("rrdb", 64, 23, 32, 4),
    "x4plus-anime-6b": ("rrdb", 64, 6, 32, 4),
    "x2plus": ("rrdb", 64, 23, 32, 2),
    "general-x4v3": ("compact", 64, 32, 0, 4),
}


def conv(inputs: int, outputs: int) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, 1, 1)


class DenseBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(conv(features + i * growth, growth) for i in range(4))
        self.fuse = conv(features + 4 * growth, features)

    def forward(self, x):
        grown = [x]
        for layer in self.convs:
            grown.append(F.leaky_relu(layer(torch.cat(grown, 1)), 0.2))
        return x + 0.2 * self.fuse(torch.cat(grown, 1))


class ResidualInResidual(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(features, growth) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class ESRGANGenerator(nn.Module):
    def __init__(self, features: int, blocks: int, growth: int, scale: int):
        super().__init__()
        self.unshuffle = 4 // scale
        self.head = conv(3 * self.unshuffle ** 2, features)
        self.trunk = nn.Sequential(*(ResidualInResidual(features, growth) for _ in range(blocks)))
        self.trunk_out = conv(features, features)
        self.up = nn.ModuleList([conv(features, features), conv(features, features)])
        self.refine, self.tail = conv(features, features), conv(features, 3)

    def forward(self, x):
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        features = self.head(x)
        features = features + self.trunk_out(self.trunk(features))
        for layer in self.up:
            features = F.leaky_relu(layer(F.interpolate(features, scale_factor=2, mode="nearest")), 0.2)
        return self.tail(F.leaky_relu(self.refine(features), 0.2))


class CompactNet(nn.Module):
    def __init__(self, features: int, convs: int, scale: int):
        super().__init__()
        layers = [conv(3, features), nn.PReLU(features)]
        for _ in range(convs):
            layers += [conv(features, features), nn.PReLU(features)]
        layers.append(conv(features, 3 * scale * scale))
        self.body, self.scale = nn.Sequential(*layers), scale

    def forward(self, x):
        upsampled = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.pixel_shuffle(self.body(x), self.scale) + upsampled


def build(name: str) -> nn.Module:
    kind, features, depth, growth, scale = ARCHITECTURES[name]
    if kind == "rrdb":
        return ESRGANGenerator(features, depth, growth, scale)
    return CompactNet(features, depth, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256, help="input side in pixels")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(args.model).eval()
    pixels = torch.rand(args.batch, 3, args.size, args.size)
    times = []
    with torch.inference_mode():
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            out = model(pixels)
            times.append(time.perf_counter() - start)
    print(json.dumps({"implementation": f"torch {torch.__version__}", "first_s": times[0],
                      "best_s": min(times[1:]), "output": list(out.shape),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
