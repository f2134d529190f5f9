#!/usr/bin/env python3
"""PyTorch training-step benchmark of vitcore's ViT family, on the CPU or a GPU.

Side-by-side reference for vitcore's own training benchmark (`vitcore bench step`). One timed step =
forward, CrossEntropyLoss (mean), zero_grad, backward, Adam step, on a fixed
random batch (x ~ N(0,1) of shape [B,1,28,28], labels uniform in 0..9).

Presets (the same architecture as tests/fixtures/make_torch_fixture.py:
Conv2d patch embedding, class token, learned pos_embed, pre-norm
nn.TransformerEncoderLayer blocks with exact-erf GELU, final LayerNorm on the
class token, Linear head):

  seed : patch 4, embed 16, 8 heads, 4 layers, feed-forward 2048,
         dropout 0.001 (embedding + every encoder-layer dropout),
         batch 512, Adam lr 1e-4
  small: patch 4, embed 64, 4 heads, 6 layers, feed-forward 256,
         dropout 0.1 (embedding + every encoder-layer dropout),
         batch 256, Adam lr 1e-4

Usage:
  python3 benches/torch_train.py --preset seed|small [--threads 2]
      [--device cpu|cuda] [--steps N] [--warmup W] [--batch B] [--dropout P]
      [--lr LR] [--json out.json] [--compile]

On cuda, loss.item() ends each step, so a step's time includes waiting for its
kernels (as vitcore's). PyTorch's defaults are kept: TF32 off for matmuls,
cuDNN's TF32 on for the patch convolution (recorded in the JSON).

Prints one JSON record on stdout (progress goes to stderr):
  {"impl": "pytorch-eager"|"pytorch-compile", "preset", "device", "batch",
   "threads", "median_ms_per_step", "images_per_s", "torch_version", ...}
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn

PRESETS = {
    "seed": dict(patch=4, embed=16, heads=8, depth=4, mlp=2048, dropout=0.001, batch=512, lr=1e-4),
    "small": dict(patch=4, embed=64, heads=4, depth=6, mlp=256, dropout=0.1, batch=256, lr=1e-4),
}


class ViT(nn.Module):
    def __init__(self, patch, embed, heads, depth, mlp, dropout, image=28, chans=1, classes=10):
        super().__init__()
        n = (image // patch) ** 2
        self.patch = nn.Conv2d(chans, embed, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, embed))
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(
                    d_model=embed,
                    nhead=heads,
                    dim_feedforward=mlp,
                    dropout=dropout,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                    layer_norm_eps=1e-5,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed, eps=1e-5)
        self.head = nn.Linear(embed, classes)

    def forward(self, x):
        b = x.shape[0]
        x = self.patch(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = self.drop(x + self.pos_embed)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    ap.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    ap.add_argument("--dropout", type=float, default=None, help="override the preset's dropout")
    ap.add_argument("--lr", type=float, default=None, help="override the preset's Adam learning rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the JSON record to this file")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor, CPU)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)

    cfg = dict(PRESETS[args.preset])
    batch = args.batch or cfg["batch"]
    cfg["batch"] = batch
    if args.dropout is not None:
        cfg["dropout"] = args.dropout
    if args.lr is not None:
        cfg["lr"] = args.lr
    model = ViT(cfg["patch"], cfg["embed"], cfg["heads"], cfg["depth"], cfg["mlp"], cfg["dropout"])
    device = torch.device(args.device)
    model.to(device)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    loss_fn = nn.CrossEntropyLoss()
    fwd = torch.compile(model) if args.compile else model

    x = torch.randn(batch, 1, 28, 28).to(device)
    y = torch.randint(0, 10, (batch,)).to(device)

    def step():
        logits = fwd(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    print(
        f"[torch_train] preset={args.preset} batch={batch} threads={torch.get_num_threads()} "
        f"params={nparams} torch={torch.__version__} compile={args.compile}",
        file=sys.stderr,
    )
    for i in range(args.warmup):
        t0 = time.perf_counter()
        l = step()
        print(f"  warmup {i}: {1e3 * (time.perf_counter() - t0):.1f} ms loss={l:.4f}", file=sys.stderr)
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        l = step()
        dt = time.perf_counter() - t0
        times.append(dt)
        print(f"  step {i}: {1e3 * dt:.1f} ms loss={l:.4f}", file=sys.stderr)

    med = statistics.median(times)
    rec = {
        "impl": "pytorch-compile" if args.compile else "pytorch-eager",
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if args.device == "cuda" else "cpu",
        "batch": batch,
        "threads": torch.get_num_threads(),
        "median_ms_per_step": round(1e3 * med, 3),
        "images_per_s": round(batch / med, 2),
        "torch_version": torch.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "steps": args.steps,
        "warmup": args.warmup,
        "min_ms_per_step": round(1e3 * min(times), 3),
        "params": nparams,
        "config": cfg,
    }
    line = json.dumps(rec)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
