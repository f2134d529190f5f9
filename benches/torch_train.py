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
  flowers: the Keras flowers write-up's model (vitcore's --preset flowers),
         written here in PyTorch: 200x200x3 input, patch 25 (64 patches, a
         Linear on each flattened patch), position embedding on the patches,
         class token prepended after it, 12 pre-norm blocks of hidden 768,
         12 heads each of key width 768 (q, k, v 9216 wide, as Keras's
         MultiHeadAttention(num_heads=12, key_dim=768); scaled_dot_product_
         attention), MLP 3072 with dropout 0.1 only there, LayerNorm eps 1e-3,
         5 classes; batch 16, Adam lr 1e-4 eps 1e-7, gradient clipping by
         value 1.0 (clip_grad_value_) before each step. 398,281,733 parameters.

Usage:
  python3 benches/torch_train.py --preset seed|small [--threads 2]
      [--device cpu|cuda] [--steps N] [--warmup W] [--batch B] [--dropout P]
      [--lr LR] [--json out.json] [--compile]

On cuda, loss.item() ends each step, so a step's time includes waiting for its
kernels (as vitcore's). PyTorch's defaults are kept: TF32 off for matmuls,
cuDNN's TF32 on for the patch convolution (recorded in the JSON).

Prints one JSON record on stdout (progress goes to stderr):
  {"impl": "pytorch-eager"|"pytorch-compile", "preset", "device", "batch",
   "threads", "median_ms_per_step", "images_per_s", "torch_version",
   "peak_rss_mib", ...}
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "seed": dict(patch=4, embed=16, heads=8, depth=4, mlp=2048, dropout=0.001, batch=512, lr=1e-4),
    "small": dict(patch=4, embed=64, heads=4, depth=6, mlp=256, dropout=0.1, batch=256, lr=1e-4),
    "flowers": dict(patch=25, embed=768, heads=12, depth=12, mlp=3072, dropout=0.1, batch=16, lr=1e-4,
                    key_dim=768, image=200, chans=3, classes=5, eps=1e-7, clip_value=1.0),
}


class KerasBlock(nn.Module):
    """The write-up's transformer_encoder: x + MHA(LN(x)); x + MLP(LN(x)), dropout in the MLP only."""

    def __init__(self, embed, heads, key_dim, mlp, dropout):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        inner = heads * key_dim
        self.norm1 = nn.LayerNorm(embed, eps=1e-3)
        self.qkv = nn.Linear(embed, 3 * inner)
        self.proj = nn.Linear(inner, embed)
        self.norm2 = nn.LayerNorm(embed, eps=1e-3)
        self.fc1 = nn.Linear(embed, mlp)
        self.fc2 = nn.Linear(mlp, embed)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, self.key_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(key_dim), as Keras
        x = x + self.proj(o.transpose(1, 2).reshape(b, t, -1))
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x))))))


class KerasViT(nn.Module):
    def __init__(self, patch, embed, heads, depth, mlp, dropout, key_dim, image, chans, classes, **_):
        super().__init__()
        self.p = patch
        n = (image // patch) ** 2
        self.patch_embed = nn.Linear(patch * patch * chans, embed)
        self.pos_embed = nn.Parameter(torch.empty(1, n, embed).uniform_(-0.05, 0.05))
        self.cls_token = nn.Parameter(0.05 * torch.randn(1, 1, embed))
        self.blocks = nn.ModuleList([KerasBlock(embed, heads, key_dim, mlp, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed, eps=1e-3)
        self.head = nn.Linear(embed, classes)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        # [B, C, H, W] -> [B, N, P*P*C]: patchify's (row, col, channel) order, as the write-up's.
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), -1)
        x = self.patch_embed(x) + self.pos_embed
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))  # logits; the softmax is inside the loss


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
    if args.preset == "flowers":
        model = KerasViT(**cfg)
    else:
        model = ViT(cfg["patch"], cfg["embed"], cfg["heads"], cfg["depth"], cfg["mlp"], cfg["dropout"])
    image, chans, classes = cfg.get("image", 28), cfg.get("chans", 1), cfg.get("classes", 10)
    device = torch.device(args.device)
    model.to(device)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], eps=cfg.get("eps", 1e-8))
    clip_value = cfg.get("clip_value")
    loss_fn = nn.CrossEntropyLoss()
    fwd = torch.compile(model) if args.compile else model

    x = torch.randn(batch, chans, image, image).to(device)
    y = torch.randint(0, classes, (batch,)).to(device)

    def step():
        logits = fwd(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)
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
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": cfg,
    }
    line = json.dumps(rec)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
