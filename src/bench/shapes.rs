//! The shapes the kernels are benchmarked at, shared by the CPU and GPU cases so their tables
//! line up: the ViT configurations (what training runs) and one large shape per op family (what
//! the kernels do when there is enough work to reach the machine's limits).

use super::check::GemmDims;
use super::Phase;
use crate::autograd::ParamStore;
use crate::error::Result;
use crate::nn::{GlobalPool, Vit, VitOptions};
use crate::optim::AdamConfig;
use crate::train::TrainConfig;

/// Dropout probability of every dropout case. The kernels are branch-free, so their time does
/// not depend on it; 0.1 makes the validation see plenty of both kept and dropped elements.
pub const DROPOUT: f32 = 0.1;
/// Mask seed of every dropout case.
pub const DROPOUT_SEED: u64 = 0x5eed;
/// Label smoothing of the cross-entropy cases (the default recipe's).
pub const SMOOTHING: f32 = 0.1;
/// Layer-norm epsilon (PyTorch's default, the presets').
pub const LN_EPS: f32 = 1e-5;

/// MNIST: 28×28 grayscale, 10 classes.
pub const IMAGE: usize = 28;
pub const CLASSES: usize = 10;

/// One ViT configuration's sizes.
#[derive(Clone, Copy, Debug)]
pub struct VitShape {
    pub name: &'static str,
    pub batch: usize,
    pub embed: usize,
    pub heads: usize,
    pub mlp: usize,
    pub patch: usize,
    pub depth: usize,
    /// A class token before the patches (the default recipe has none: it pools the patches).
    pub class_token: bool,
}

impl VitShape {
    pub fn patches(&self) -> usize {
        (IMAGE / self.patch) * (IMAGE / self.patch)
    }
    pub fn tokens(&self) -> usize {
        self.patches() + usize::from(self.class_token)
    }
    /// Token rows of a batch: the M of every linear layer in a block.
    pub fn rows(&self) -> usize {
        self.batch * self.tokens()
    }
    /// The linear layers of a block: (name, in, out).
    pub fn linears(&self) -> [(&'static str, usize, usize); 4] {
        let (d, m) = (self.embed, self.mlp);
        [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, m), ("fc2", m, d)]
    }

    /// The names and shapes of the model's parameters (what the optimiser updates), from the
    /// model itself so they cannot drift from it.
    pub fn parameters(&self) -> Result<ParamShapes> {
        let mut cfg = TrainConfig::seed_preset().model;
        cfg.embed_dim = self.embed;
        cfg.heads = self.heads;
        cfg.mlp_dim = self.mlp;
        cfg.patch = self.patch;
        cfg.depth = self.depth;
        let opts = VitOptions {
            no_class_token: !self.class_token,
            global_pool: if self.class_token {
                GlobalPool::Token
            } else {
                GlobalPool::Avg
            },
            ..VitOptions::default()
        };
        let mut store = ParamStore::new();
        Vit::with_options(cfg, opts, &mut store, 0)?;
        Ok(store
            .ids()
            .map(|id| (store.name(id).to_string(), store.value(id).shape().to_vec()))
            .collect())
    }
}

/// The seed preset (the original PyTorch write-up), the small config and the default recipe's
/// model; with `quick`, the seed preset's widths at a batch of 4 only.
pub fn vit_shapes(quick: bool) -> Vec<VitShape> {
    let seed = VitShape {
        name: "seed",
        batch: 512,
        embed: 16,
        heads: 8,
        mlp: 2048,
        patch: 4,
        depth: 4,
        class_token: true,
    };
    if quick {
        return vec![VitShape { batch: 4, ..seed }];
    }
    let small = VitShape {
        name: "small",
        batch: 256,
        embed: 64,
        heads: 4,
        mlp: 256,
        patch: 4,
        depth: 6,
        class_token: true,
    };
    // The default recipe's model (`vitcore train mnist`): patch 7 and no class token, so 16
    // tokens per image.
    let default = VitShape {
        name: "default",
        batch: 64,
        embed: 64,
        heads: 4,
        mlp: 256,
        patch: 7,
        depth: 6,
        class_token: false,
    };
    vec![seed, small, default]
}

/// One large shape per op family.
#[derive(Clone, Copy, Debug)]
pub struct LargeShapes {
    /// Square matrix product n×n×n.
    pub gemm: usize,
    /// Linear layer: rows, in, out.
    pub linear: (usize, usize, usize),
    /// Element-wise and row-wise ops: rows × cols.
    pub rows: usize,
    pub cols: usize,
    /// Attention: batch, tokens, embed, heads (ViT-B/16 at 224×224).
    pub attention: (usize, usize, usize, usize),
    /// Patchify: images [B, C, H, W] and the patch size.
    pub images: [usize; 4],
    pub patch: usize,
    /// Cross-entropy: rows × classes.
    pub logits: (usize, usize),
    /// Adam: one parameter of this many elements.
    pub params: usize,
}

/// The large shapes; `gpu` scales the matrix product up (1024³ is a fraction of a millisecond
/// on a GPU, too little work to fill it). `quick`: small stand-ins.
pub fn large_shapes(quick: bool, gpu: bool) -> LargeShapes {
    if quick {
        return LargeShapes {
            gemm: 128,
            linear: (256, 128, 128),
            rows: 256,
            cols: 1024,
            attention: (2, 197, 192, 3),
            images: [4, 3, 64, 64],
            patch: 16,
            logits: (256, 100),
            params: 1 << 18,
        };
    }
    LargeShapes {
        gemm: if gpu { 4096 } else { 1024 },
        linear: if gpu { (16384, 4096, 4096) } else { (4096, 1024, 1024) },
        rows: 65536,
        cols: 1024,
        attention: (32, 197, 768, 12),
        images: [256, 3, 224, 224],
        patch: 16,
        logits: (16384, 1000),
        params: 1 << 24,
    }
}

/// Named parameter shapes: what an optimiser step updates.
pub type ParamShapes = Vec<(String, Vec<usize>)>;

/// The optimiser the Adam cases step: AdamW with the default recipe's decay, every parameter decayed.
pub fn bench_adam_config() -> AdamConfig {
    AdamConfig {
        lr: 1e-3,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: 0.05,
    }
}

/// The parameters an Adam case updates, labelled: each ViT configuration's (from the model), and
/// one large matrix. The CPU steps `optim::Adam` over them; the GPU steps their elements as one.
pub fn adam_shapes(quick: bool) -> Result<Vec<(String, ParamShapes)>> {
    let mut v = Vec::new();
    for s in vit_shapes(quick) {
        v.push((s.name.to_string(), s.parameters()?));
    }
    let params = large_shapes(quick, false).params;
    let side = (params as f64).sqrt() as usize;
    v.push((
        "large".to_string(),
        vec![("weight".to_string(), vec![params / side, side])],
    ));
    Ok(v)
}

/// One matrix product of the benchmark: its table row (kernel, phase, shape label), its sizes,
/// and the stored shapes of its two operands. The CPU and GPU cases both build theirs from
/// these, so their matmul and linear rows cannot drift apart; each adds only its own way of
/// running the product.
#[derive(Clone, Debug)]
pub struct GemmProduct {
    pub kernel: &'static str,
    pub phase: Phase,
    pub shape: String,
    pub dims: GemmDims,
    pub a: Vec<usize>,
    pub b: Vec<usize>,
}

/// The linear layer `y = x·Wᵀ + b` (`x [rows, din]`, `W [dout, din]`): forward (inputs x, W),
/// dX = G·W (inputs G [rows, dout], W) and dW = Gᵀ·X (inputs G, X), in that order.
pub fn linear_products(label: &str, rows: usize, din: usize, dout: usize) -> [GemmProduct; 3] {
    let shape = format!("{label} {rows}x{dout}x{din}");
    let product = |kernel, phase, m, n, k, ta, tb, a: [usize; 2], b: [usize; 2]| GemmProduct {
        kernel,
        phase,
        shape: shape.clone(),
        dims: GemmDims {
            batch: 1,
            m,
            n,
            k,
            ta,
            tb,
        },
        a: a.to_vec(),
        b: b.to_vec(),
    };
    [
        product(
            "linear",
            Phase::Fwd,
            rows,
            dout,
            din,
            false,
            true,
            [rows, din],
            [dout, din],
        ),
        product(
            "linear.dx",
            Phase::Bwd,
            rows,
            din,
            dout,
            false,
            false,
            [rows, dout],
            [dout, din],
        ),
        product(
            "linear.dw",
            Phase::Bwd,
            dout,
            din,
            rows,
            true,
            false,
            [rows, dout],
            [rows, din],
        ),
    ]
}

/// `ops::matmul` on `[batch, m, k]·[batch, k, n]` (B stored `[batch, n, k]` when `tb`), and with
/// `bwd` (for `tb = false` only) its two gradient products `dA = G·Bᵀ`, `dB = Aᵀ·G`.
pub fn matmul_products(
    label: &str,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    tb: bool,
    bwd: bool,
) -> Vec<GemmProduct> {
    let shape = if batch > 1 {
        format!("{label} {batch}x({m}x{n}x{k})")
    } else {
        format!("{label} {m}x{n}x{k}")
    };
    let d = GemmDims {
        batch,
        m,
        n,
        k,
        ta: false,
        tb,
    };
    let b_shape = if tb { vec![batch, n, k] } else { vec![batch, k, n] };
    let mut v = vec![GemmProduct {
        kernel: "matmul",
        phase: Phase::Fwd,
        shape: shape.clone(),
        dims: d,
        a: vec![batch, m, k],
        b: b_shape.clone(),
    }];
    if bwd && !tb {
        v.push(GemmProduct {
            kernel: "matmul.da",
            phase: Phase::Bwd,
            shape: shape.clone(),
            dims: GemmDims {
                n: k,
                k: n,
                tb: true,
                ..d
            },
            a: vec![batch, m, n],
            b: b_shape,
        });
        v.push(GemmProduct {
            kernel: "matmul.db",
            phase: Phase::Bwd,
            shape,
            dims: GemmDims {
                m: k,
                k: m,
                ta: true,
                ..d
            },
            a: vec![batch, m, k],
            b: vec![batch, m, n],
        });
    }
    v
}
