//! Global average pooling (`--global-pool avg`) with and without a class token: what the head
//! reads, checked against a hand computation in f64; the gradients of the whole model against
//! finite differences; the permutation symmetry it must have; and the options' errors.

mod common;

use common::rel_err;
use vitcore::nn::{GlobalPool, Mode, Vit, VitConfig, VitOptions};
use vitcore::rng::Rng;
use vitcore::train::TrainConfig;
use vitcore::{Graph, ParamStore, Tensor};

/// A small model: 12×12 images, patch 4 (9 patches), width 8, 2 heads, 2 blocks, 3 classes.
fn config(depth: usize) -> VitConfig {
    let mut cfg = TrainConfig::default_preset().model;
    cfg.image_height = 12;
    cfg.image_width = 12;
    cfg.patch = 4;
    cfg.embed_dim = 8;
    cfg.heads = 2;
    cfg.mlp_dim = 11;
    cfg.depth = depth;
    cfg.num_classes = 3;
    cfg
}

fn avg(class_token: bool) -> VitOptions {
    VitOptions {
        global_pool: GlobalPool::Avg,
        no_class_token: !class_token,
        ..VitOptions::default()
    }
}

fn images(seed: u64, b: usize) -> Tensor {
    Tensor::from_vec(Rng::new(seed).normal_vec(b * 144, 1.0), &[b, 1, 12, 12]).unwrap()
}

fn logits(vit: &Vit, store: &ParamStore, x: &Tensor) -> Vec<f32> {
    let mut g = Graph::no_grad();
    let y = vit.forward(&mut g, store, x.clone(), Mode::Eval).unwrap();
    g.value(y).to_vec()
}

/// Set every parameter whose name contains `part` to `v`.
fn fill(store: &mut ParamStore, part: &str, v: f32) {
    let ids: Vec<_> = store.ids().filter(|&id| store.name(id).contains(part)).collect();
    for id in ids {
        store.value_mut(id).data_mut().fill(v);
    }
}

fn values(store: &ParamStore, name: &str) -> Vec<f64> {
    let id = store.id(name).unwrap_or_else(|| panic!("no parameter {name}"));
    store.value(id).data().iter().map(|&v| v as f64).collect()
}

#[test]
fn the_head_reads_the_normalised_mean_of_the_patch_tokens() {
    // With the blocks' output layers at zero every block is the identity, so the tokens reaching
    // the head are patch_embed(x) + pos_embed, and the logits are
    // head(fc_norm(mean over patches)): computed here by hand in f64. With a class token its
    // value must not matter (the mean skips it).
    for class_token in [false, true] {
        let mut store = ParamStore::new();
        let vit = Vit::with_options(config(2), avg(class_token), &mut store, 5).unwrap();
        fill(&mut store, "attn.proj", 0.0);
        fill(&mut store, "mlp.fc2", 0.0);
        // A non-trivial final norm.
        let id = store.id("fc_norm.weight").unwrap();
        let w = Rng::new(3).normal_vec(8, 1.0);
        store.value_mut(id).data_mut().copy_from_slice(&w);
        assert!(store.id("norm.weight").is_none(), "the final norm is fc_norm");
        assert_eq!(store.id("cls_token").is_some(), class_token);
        let (b, n, d, p) = (3, 9, 8, 4);
        let x = images(11, b);
        let got = logits(&vit, &store, &x);

        let (pw, pb) = (
            values(&store, "patch_embed.proj.weight"),
            values(&store, "patch_embed.proj.bias"),
        );
        let pos = values(&store, "pos_embed");
        let prefix = usize::from(class_token);
        assert_eq!(pos.len(), (n + prefix) * d);
        let (nw, nb) = (values(&store, "fc_norm.weight"), values(&store, "fc_norm.bias"));
        let (hw, hb) = (values(&store, "head.weight"), values(&store, "head.bias"));
        let xd = x.data();
        let mut want = Vec::new();
        for bi in 0..b {
            let mut mean = vec![0.0f64; d];
            for patch in 0..n {
                let (gy, gx) = (patch / 3, patch % 3);
                for o in 0..d {
                    let mut t = pb[o] + pos[(prefix + patch) * d + o];
                    for py in 0..p {
                        for px in 0..p {
                            let pix = xd[bi * 144 + (gy * p + py) * 12 + gx * p + px] as f64;
                            t += pw[o * p * p + py * p + px] * pix;
                        }
                    }
                    mean[o] += t / n as f64;
                }
            }
            let mu = mean.iter().sum::<f64>() / d as f64;
            let var = mean.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / d as f64;
            let normed: Vec<f64> = (0..d)
                .map(|i| (mean[i] - mu) / (var + 1e-5f64).sqrt() * nw[i] + nb[i])
                .collect();
            for k in 0..3 {
                want.push(hb[k] + (0..d).map(|i| hw[k * d + i] * normed[i]).sum::<f64>());
            }
        }
        let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        let e = rel_err(&got, &want);
        assert!(e < 1e-5, "class token {class_token}: logits off by {e}");
        if class_token {
            let id = store.id("cls_token").unwrap();
            store.value_mut(id).data_mut().fill(3.0);
            let again: Vec<f64> = logits(&vit, &store, &x).iter().map(|&v| v as f64).collect();
            assert!(rel_err(&again, &got) < 1e-6, "the class token leaked into the mean");
        }
    }
}

#[test]
fn without_position_embedding_the_pooled_model_ignores_patch_order() {
    // No class token and no position embedding: nothing tells the patches apart, so swapping
    // two patches of the image must leave the logits unchanged (up to summation order). A head
    // reading one token instead of the mean would fail this.
    let mut store = ParamStore::new();
    let vit = Vit::with_options(config(2), avg(false), &mut store, 8).unwrap();
    fill(&mut store, "pos_embed", 0.0);
    let x = images(4, 2);
    let mut swapped = x.clone();
    {
        let s = swapped.data_mut();
        let xd = x.data();
        // Patch (0, 0) ↔ patch (2, 1) in both images.
        for bi in 0..2 {
            for py in 0..4 {
                for px in 0..4 {
                    let a = bi * 144 + py * 12 + px;
                    let c = bi * 144 + (8 + py) * 12 + 4 + px;
                    s[a] = xd[c];
                    s[c] = xd[a];
                }
            }
        }
    }
    let (a, c) = (logits(&vit, &store, &x), logits(&vit, &store, &swapped));
    assert!(common::rel_err_f32(&c, &a) < 1e-5, "{a:?} vs {c:?}");
    assert!(
        common::rel_err_f32(&logits(&vit, &store, &images(5, 2)), &a) > 1e-3,
        "the logits depend on the input"
    );
}

#[test]
fn pooled_model_gradients_match_finite_differences() {
    // The loss along a random direction v of every parameter: (L(θ+εv) − L(θ−εv)) / 2ε against
    // ∇L·v from the backward pass, and per parameter tensor for the ones the pooling touches.
    for class_token in [false, true] {
        let mut store = ParamStore::new();
        let vit = Vit::with_options(config(2), avg(class_token), &mut store, 21).unwrap();
        let x = images(6, 4);
        let labels = [0u32, 2, 1, 2];
        let loss = |s: &ParamStore| -> f64 {
            let mut g = Graph::no_grad();
            let y = vit.forward(&mut g, s, x.clone(), Mode::Eval).unwrap();
            let l = g.cross_entropy(y, &labels, 0.0).unwrap();
            g.value(l).to_vec()[0] as f64
        };
        let mut g = Graph::new();
        let y = vit.forward(&mut g, &store, x.clone(), Mode::Eval).unwrap();
        let l = g.cross_entropy(y, &labels, 0.0).unwrap();
        let grads = g.backward(l).unwrap();
        store.zero_grad();
        store.accumulate_grads(&grads).unwrap();
        let mut r = Rng::new(99);
        let ids: Vec<_> = store.ids().collect();
        for only in [
            None,
            Some("pos_embed"),
            Some("fc_norm.weight"),
            Some("patch_embed.proj.bias"),
        ] {
            let dirs: Vec<Vec<f32>> = ids
                .iter()
                .map(|&id| {
                    let n = store.value(id).numel();
                    match only {
                        Some(name) if store.name(id) != name => vec![0.0; n],
                        _ => r.normal_vec(n, 1.0),
                    }
                })
                .collect();
            let analytic: f64 = ids
                .iter()
                .zip(&dirs)
                .map(|(&id, v)| {
                    let gr = store.grad(id).expect("every parameter gets a gradient");
                    gr.data().iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                })
                .sum();
            let eps = 1e-3f32;
            let shifted = |sign: f32| {
                let mut s = store.clone();
                for (&id, v) in ids.iter().zip(&dirs) {
                    s.value_mut(id)
                        .data_mut()
                        .iter_mut()
                        .zip(v)
                        .for_each(|(p, &d)| *p += sign * eps * d);
                }
                loss(&s)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
            let e = (numeric - analytic).abs() / analytic.abs().max(1e-3);
            assert!(
                e < 2e-2,
                "class token {class_token}, {only:?}: finite difference {numeric} vs backward {analytic}"
            );
        }
    }
}

#[test]
fn default_recipe_pools_without_a_class_token_and_bad_options_are_refused() {
    let c = TrainConfig::default_preset();
    assert!(c.model_options.no_class_token);
    assert_eq!(c.model_options.global_pool, GlobalPool::Avg);
    // The seed and photo presets keep timm's class token.
    for c in [TrainConfig::seed_preset(), TrainConfig::photos_preset()] {
        assert_eq!(c.model_options, VitOptions::default(), "{}", c.preset);
    }
    let mut store = ParamStore::new();
    let bad = VitOptions {
        no_class_token: true,
        ..VitOptions::default()
    };
    let e = Vit::with_options(config(1), bad, &mut store, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--global-pool avg"), "{e}");
    // Options written before pooling existed read as the class-token model.
    let old: VitOptions = serde_json::from_str(r#"{"no_embed_class": false}"#).unwrap();
    assert_eq!(old.global_pool, GlobalPool::Token);
    assert!(!old.no_class_token);
    let new: VitOptions = serde_json::from_str(&serde_json::to_string(&avg(false)).unwrap()).unwrap();
    assert_eq!(new, avg(false));
}
