//! The fused attention op against the composed ops it replaces (forward and every gradient, with
//! and without attention dropout), and the whole ViT with either path.
//! Tolerance: relative error ≤ 1e-5 (both are f32; only summation order differs).

mod common;

use common::rel_err_f32;
use vitcore::nn::{Mode, Vit};
use vitcore::rng::Rng;
use vitcore::train::TrainConfig;
use vitcore::{Graph, ParamStore, Tensor, Var};

const TOL: f64 = 1e-5;

/// The composed attention core on `qkv [B,T,3D]`, as in `nn::vit` (dropout seed as the op's).
fn composed(g: &mut Graph, qkv: Var, b: usize, t: usize, heads: usize, dh: usize, p: f32, seed: u64) -> Var {
    let x = g.reshape(qkv, &[b, t, 3, heads, dh]).unwrap();
    let x = g.permute(x, &[2, 0, 3, 1, 4]).unwrap();
    let parts: Vec<Var> = (0..3)
        .map(|i| {
            let s = g.select(x, 0, i).unwrap();
            g.reshape(s, &[b * heads, t, dh]).unwrap()
        })
        .collect();
    let s = g.matmul_t(parts[0], parts[1], false, true).unwrap();
    let s = g.scale(s, 1.0 / (dh as f32).sqrt()).unwrap();
    let pr = g.softmax(s).unwrap();
    let pr = g.dropout(pr, p, seed).unwrap();
    let o = g.matmul(pr, parts[2]).unwrap();
    let o = g.reshape(o, &[b, heads, t, dh]).unwrap();
    let o = g.permute(o, &[0, 2, 1, 3]).unwrap();
    g.reshape(o, &[b, t, heads * dh]).unwrap()
}

#[test]
fn fused_attention_equals_composed_forward_and_backward() {
    let mut rng = Rng::new(5);
    for &(b, t, heads, dh, p) in &[
        (2usize, 7usize, 3usize, 5usize, 0.0f32),
        (3, 11, 2, 3, 0.3),
        (1, 50, 8, 2, 0.1),
        // Head widths at and past the micro-kernel's 16 columns, T just past a 6-row tile.
        (2, 16, 2, 16, 0.2),
        (1, 50, 2, 17, 0.1),
        (2, 6, 1, 33, 0.0),
    ] {
        let d = heads * dh;
        let qkv = Tensor::from_vec(rng.normal_vec(b * t * 3 * d, 1.0), &[b, t, 3 * d]).unwrap();
        let upstream = Tensor::from_vec(rng.normal_vec(b * t * d, 1.0), &[b, t, d]).unwrap();
        let seed = 1234;
        let mut outs = Vec::new();
        for fused in [true, false] {
            let mut g = Graph::new();
            let x = g.leaf(qkv.clone());
            let y = if fused {
                g.attention(x, heads, p, seed).unwrap()
            } else {
                composed(&mut g, x, b, t, heads, dh, p, seed)
            };
            let grads = g.backward_with(y, upstream.clone()).unwrap();
            outs.push((g.value(y).to_vec(), grads.get(x).unwrap().to_vec()));
        }
        let ef = rel_err_f32(&outs[0].0, &outs[1].0);
        let eb = rel_err_f32(&outs[0].1, &outs[1].1);
        assert!(
            ef <= TOL && eb <= TOL,
            "b{b} t{t} h{heads} dh{dh} p{p}: forward {ef}, backward {eb}"
        );
    }
}

#[test]
fn vit_with_fused_attention_equals_composed_in_training_mode() {
    let mut cfg = TrainConfig::seed_preset().model;
    cfg.mlp_dim = 37;
    cfg.dropout = 0.1;
    cfg.attn_dropout = 0.2;
    cfg.identical_blocks = false;
    let mut store = ParamStore::new();
    let mut vit = Vit::new(cfg, &mut store, 3).unwrap();
    let x = Tensor::from_vec(Rng::new(9).normal_vec(3 * 784, 1.0), &[3, 1, 28, 28]).unwrap();
    let mut results = Vec::new();
    for fused in [true, false] {
        vit.fused_attention = fused;
        let mut g = Graph::new();
        let logits = vit
            .forward(&mut g, &store, x.clone(), Mode::Train { seed: 77 })
            .unwrap();
        let loss = g.cross_entropy(logits, &[1, 2, 3], 0.0).unwrap();
        let grads = g.backward(loss).unwrap();
        let mut s = store.clone();
        s.zero_grad();
        s.accumulate_grads(&grads).unwrap();
        let all: Vec<f32> = s.ids().flat_map(|id| s.grad(id).unwrap().to_vec()).collect();
        results.push((g.value(logits).to_vec(), all));
    }
    assert!(rel_err_f32(&results[0].0, &results[1].0) <= TOL);
    assert!(rel_err_f32(&results[0].1, &results[1].1) <= TOL);
}
