//! End-to-end gradient check of one pre-norm transformer block, built from the engine's ops:
//!
//! ```text
//! h = x + proj(attention(layernorm1(x)))
//! y = h + fc2(gelu(fc1(layernorm2(h))))
//! ```
//! with x: [B=2, T=5, D=6], H=3 heads (Dh=2), MLP hidden 7, exact GELU, eps 1e-6.
//! The engine side splits heads the way the model does (linear qkv → reshape [B,T,3,H,Dh] →
//! permute [2,0,3,1,4] → select q,k,v → reshape [B·H,T,Dh] → q·kᵀ/√Dh → softmax → ·v → reshape
//! [B,H,T,Dh] → permute [0,2,1,3] → reshape [B,T,D] → proj); the f64 reference computes
//! attention head by head with index loops on the qkv features (timm order: feature
//! `s·D + h·Dh + e` for s ∈ {q, k, v}), sharing no code with the engine.
//!
//! Tolerances: forward 1e-5, gradients 1e-4 (relative 2-norm and max-abs/max-abs), w.r.t. x and
//! every one of the 12 parameters, FD over every element (~400 elements, ~800 block evaluations
//! in f64).

mod common;

use common::*;
use vitcore::ops::GeluKind;
use vitcore::rng::Rng;
use vitcore::{Graph, ParamStore, Tensor, Var};

const B: usize = 2;
const T: usize = 5;
const D: usize = 6;
const H: usize = 3;
const DH: usize = D / H;
const HM: usize = 7;
const EPS: f32 = 1e-6;

/// (timm name, shape) of the inputs, in the order the builder and the reference take them.
fn specs() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("x", vec![B, T, D]),
        ("blocks.0.norm1.weight", vec![D]),
        ("blocks.0.norm1.bias", vec![D]),
        ("blocks.0.attn.qkv.weight", vec![3 * D, D]),
        ("blocks.0.attn.qkv.bias", vec![3 * D]),
        ("blocks.0.attn.proj.weight", vec![D, D]),
        ("blocks.0.attn.proj.bias", vec![D]),
        ("blocks.0.norm2.weight", vec![D]),
        ("blocks.0.norm2.bias", vec![D]),
        ("blocks.0.mlp.fc1.weight", vec![HM, D]),
        ("blocks.0.mlp.fc1.bias", vec![HM]),
        ("blocks.0.mlp.fc2.weight", vec![D, HM]),
        ("blocks.0.mlp.fc2.bias", vec![D]),
    ]
}

fn random_inputs(seed: u64) -> Vec<Input> {
    let mut rng = Rng::new(seed);
    specs()
        .into_iter()
        .map(|(name, shape)| {
            if name.ends_with("norm1.weight") || name.ends_with("norm2.weight") {
                randn_around(&mut rng, &shape, 1.0, 0.2)
            } else if name.ends_with("bias") {
                randn(&mut rng, &shape, 0.2)
            } else if name == "x" {
                randn(&mut rng, &shape, 1.0)
            } else {
                // Weights large enough that attention is far from uniform and GELU sees both tails.
                randn(&mut rng, &shape, 0.6)
            }
        })
        .collect()
}

/// The block on the engine. `v` = [x, then the 12 parameters in `specs()` order].
fn build_block(g: &mut Graph, v: &[Var]) -> vitcore::Result<Var> {
    let x = v[0];
    let a = g.layernorm(x, v[1], v[2], EPS)?;
    let qkv = g.linear(a, v[3], Some(v[4]))?; // [B, T, 3D]
    let qkv = g.reshape(qkv, &[B, T, 3, H, DH])?;
    let qkv = g.permute(qkv, &[2, 0, 3, 1, 4])?; // [3, B, H, T, Dh]
    let mut qkv_split = Vec::new();
    for s in 0..3 {
        let t = g.select(qkv, 0, s)?; // [B, H, T, Dh]
        qkv_split.push(g.reshape(t, &[B * H, T, DH])?);
    }
    let (q, k, vv) = (qkv_split[0], qkv_split[1], qkv_split[2]);
    let scores = g.matmul_t(q, k, false, true)?; // [B·H, T, T]
    let scores = g.scale(scores, 1.0 / (DH as f32).sqrt())?;
    let p = g.softmax(scores)?;
    let o = g.matmul(p, vv)?; // [B·H, T, Dh]
    let o = g.reshape(o, &[B, H, T, DH])?;
    let o = g.permute(o, &[0, 2, 1, 3])?; // [B, T, H, Dh]
    let o = g.reshape(o, &[B, T, D])?;
    let o = g.linear(o, v[5], Some(v[6]))?;
    let h = g.add(x, o)?;
    let m = g.layernorm(h, v[7], v[8], EPS)?;
    let m = g.linear(m, v[9], Some(v[10]))?;
    let m = g.gelu(m, GeluKind::Erf)?;
    let m = g.linear(m, v[11], Some(v[12]))?;
    g.add(h, m)
}

/// The block in f64, from the definitions.
fn block_ref(p: &[Vec<f64>]) -> Vec<f64> {
    let x = &p[0];
    let eps = EPS as f64;
    let a = layernorm_ref(x, D, &p[1], &p[2], eps);
    let qkv = linear_ref(&a, &p[3], Some(&p[4]), D, 3 * D); // [B, T, 3D]
    let at = |b: usize, t: usize, s: usize, h: usize, e: usize| qkv[(b * T + t) * 3 * D + s * D + h * DH + e];
    let mut attn = vec![0.0; B * T * D];
    let scale = 1.0 / (DH as f64).sqrt();
    for b in 0..B {
        for h in 0..H {
            for t in 0..T {
                let mut s: Vec<f64> = (0..T)
                    .map(|u| (0..DH).map(|e| at(b, t, 0, h, e) * at(b, u, 1, h, e)).sum::<f64>() * scale)
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = s.iter().sum();
                for e in 0..DH {
                    attn[(b * T + t) * D + h * DH + e] = (0..T).map(|u| s[u] / z * at(b, u, 2, h, e)).sum();
                }
            }
        }
    }
    let o = linear_ref(&attn, &p[5], Some(&p[6]), D, D);
    let hres = add_ref(x, &o);
    let m = layernorm_ref(&hres, D, &p[7], &p[8], eps);
    let m = linear_ref(&m, &p[9], Some(&p[10]), D, HM);
    let m: Vec<f64> = m.into_iter().map(gelu_erf_ref).collect();
    let m = linear_ref(&m, &p[11], Some(&p[12]), HM, D);
    add_ref(&hres, &m)
}

/// Forward and gradients w.r.t. x and all 12 parameters, two random draws.
/// Tolerances: forward 1e-5, gradients 1e-4 (the defaults).
#[test]
fn prenorm_block_end_to_end() {
    for seed in [1, 2] {
        let inputs = random_inputs(seed);
        let report = Check {
            seed: 100 + seed,
            ..Check::default()
        }
        .run(
            &format!("pre-norm block (seed {seed})"),
            &inputs,
            build_block,
            block_ref,
        );
        assert_eq!(report.grads.len(), 13, "every input must be checked");
        report.assert_ok();
    }
}

/// The reference is not trivially satisfied: the attention must actually mix tokens (some
/// softmax row far from one-hot and far from uniform) and the block output must differ from x
/// by more than a rounding error.
#[test]
fn block_reference_is_nontrivial() {
    let inputs = random_inputs(1);
    let xs: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(&i.data)).collect();
    let y = block_ref(&xs);
    assert!(rel_err(&y, &xs[0]) > 0.1, "block is close to the identity");
    let probs = attention_probs(&inputs);
    let max_p = probs
        .chunks(T)
        .map(|r| r.iter().cloned().fold(0.0f32, f32::max))
        .fold(0.0f32, f32::max);
    let min_max = probs
        .chunks(T)
        .map(|r| r.iter().cloned().fold(0.0f32, f32::max))
        .fold(1.0f32, f32::min);
    assert!(
        max_p > 0.4 && min_max < 0.99,
        "attention is degenerate: max {max_p}, min row max {min_max}"
    );
}

/// Attention probabilities of the block's first layer (engine), [B·H, T, T] flattened.
fn attention_probs(inputs: &[Input]) -> Vec<f32> {
    let mut g = Graph::no_grad();
    let v: Vec<Var> = inputs.iter().map(|i| g.constant(tensor(i))).collect();
    let a = g.layernorm(v[0], v[1], v[2], EPS).unwrap();
    let qkv = g.linear(a, v[3], Some(v[4])).unwrap();
    let qkv = g.reshape(qkv, &[B, T, 3, H, DH]).unwrap();
    let qkv = g.permute(qkv, &[2, 0, 3, 1, 4]).unwrap();
    let q = g.select(qkv, 0, 0).unwrap();
    let k = g.select(qkv, 0, 1).unwrap();
    let q = g.reshape(q, &[B * H, T, DH]).unwrap();
    let k = g.reshape(k, &[B * H, T, DH]).unwrap();
    let s = g.matmul_t(q, k, false, true).unwrap();
    let s = g.scale(s, 1.0 / (DH as f32).sqrt()).unwrap();
    let p = g.softmax(s).unwrap();
    g.value(p).to_vec()
}

/// The same block with its parameters in a `ParamStore` under timm names, brought in with
/// `g.param`: the gradients that `accumulate_grads` stores under each name equal the leaf
/// gradients checked above (relative 1e-6; the computation is the same), every parameter gets
/// one, and the no-grad forward equals the recorded one exactly.
#[test]
fn block_through_param_store() {
    const TOL: f64 = 1e-6;
    let inputs = random_inputs(1);
    let mut store = ParamStore::new();
    let ids: Vec<_> = specs()[1..]
        .iter()
        .zip(&inputs[1..])
        .map(|((name, _), i)| store.add(*name, tensor(i)).unwrap())
        .collect();
    let r = Tensor::from_vec(Rng::new(77).normal_vec(B * T * D, 1.0), &[B, T, D]).unwrap();

    // Leaves.
    let mut gl = Graph::new();
    let lv: Vec<Var> = inputs.iter().map(|i| gl.leaf(tensor(i))).collect();
    let yl = build_block(&mut gl, &lv).unwrap();
    let leaf_grads = gl.backward_with(yl, r.clone()).unwrap();

    // Parameters.
    let mut gp = Graph::new();
    let mut pv = vec![gp.constant(tensor(&inputs[0]))];
    pv.extend(ids.iter().map(|&id| gp.param(&store, id)));
    let yp = build_block(&mut gp, &pv).unwrap();
    assert_eq!(gp.value(yp).data(), gl.value(yl).data());
    let grads = gp.backward_with(yp, r).unwrap();
    assert!(grads.get(pv[0]).is_none(), "a constant input got a gradient");
    assert_eq!(grads.params().count(), 12);
    store.accumulate_grads(&grads).unwrap();
    for (k, &id) in ids.iter().enumerate() {
        let got = to_f64(
            store
                .grad(id)
                .unwrap_or_else(|| panic!("no gradient for {}", store.name(id)))
                .data(),
        );
        let want = to_f64(leaf_grads.get(lv[k + 1]).unwrap().data());
        let e = rel_err(&got, &want);
        assert!(
            e <= TOL,
            "{}: store gradient differs from the leaf gradient by {e:.2e}",
            store.name(id)
        );
    }

    let mut gn = Graph::no_grad();
    let nv: Vec<Var> = inputs.iter().map(|i| gn.constant(tensor(i))).collect();
    let yn = build_block(&mut gn, &nv).unwrap();
    assert_eq!(gn.value(yn).data(), gl.value(yl).data(), "no_grad forward differs");
}
