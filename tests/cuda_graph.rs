//! The GPU backend through the public API: every op on GPU tensors against the same op on CPU
//! tensors (fresh random inputs, awkward sizes), the autograd on GPU values, and one whole ViT
//! training step — loss, logits, every parameter gradient, gradient clipping and the Adam update —
//! on the GPU against the CPU. Then the step's steady state: no device allocation after the
//! first steps.
//!
//! Tolerances: each op ≤ 1e-5 relative error (as `tests/cuda_vs_cpu.rs`). The whole step chains
//! about forty kernels whose f32 sums are ordered differently on each device (tiles, warp
//! reductions), so its gradients get 1e-4; the loss and logits still 1e-5. The Adam update is
//! compared from the same gradients on both devices, to 1e-5.
//!
//! Without a usable GPU the GPU tests print `skipped: <reason>` and pass; the tests that a
//! missing GPU is an error, not a panic, run everywhere.

mod cuda_common;

use cuda_common::{check_tol, rand_tensor, rand_vec, rng};
use vitcore::autograd::{Graph, ParamStore};
use vitcore::backend::cuda::cuda_available;
use vitcore::nn::{GlobalPool, Init, Mode, Vit, VitConfig, VitOptions};
use vitcore::ops::dropout::Mask;
use vitcore::ops::{self, GeluKind};
use vitcore::optim::{clip_grad_norm, clip_grad_value, default_no_decay, Adam, AdamConfig};
use vitcore::rng::Rng;
use vitcore::train;
use vitcore::{Device, Tensor};

const OP_TOL: f64 = 1e-5;
const STEP_TOL: f64 = 1e-4;

fn on_gpu(t: &Tensor) -> Tensor {
    t.to_device(Device::Cuda).expect("upload")
}

/// Run `f` on the CPU inputs and on GPU copies of them; every output must be a GPU tensor of the
/// CPU output's shape and within `OP_TOL`.
fn compare(what: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> vitcore::Result<Vec<Tensor>>) {
    let cpu = f(inputs).unwrap_or_else(|e| panic!("{what} on the CPU: {e}"));
    let gpu_inputs: Vec<Tensor> = inputs.iter().map(on_gpu).collect();
    let gpu = f(&gpu_inputs).unwrap_or_else(|e| panic!("{what} on the GPU: {e}"));
    assert_eq!(cpu.len(), gpu.len(), "{what}: output count");
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(g.device(), Device::Cuda, "{what} output {i} left the GPU");
        assert_eq!(g.shape(), c.shape(), "{what} output {i}: shape");
        check_tol(&format!("{what} #{i}"), &g.values().unwrap(), c.data(), OP_TOL);
    }
}

#[test]
fn elementwise_and_data_movement_ops_match_cpu() {
    let _dev = gpu_or_skip!();
    let mut r = rng("elementwise");
    let a = rand_tensor(&mut r, &[3, 7, 5]);
    for b_shape in [&[1, 7, 5][..], &[5], &[3, 1, 5], &[3, 7, 5]] {
        let b = rand_tensor(&mut r, b_shape);
        compare(&format!("add_broadcast {b_shape:?}"), &[a.clone(), b], |x| {
            Ok(vec![ops::add::add_broadcast(&x[0], &x[1])?])
        });
        let g = rand_tensor(&mut r, &[3, 7, 5]);
        compare(&format!("reduce_to_shape {b_shape:?}"), &[g], |x| {
            Ok(vec![ops::add::reduce_to_shape(&x[0], b_shape)?])
        });
    }
    compare("sum_rows", &[rand_tensor(&mut r, &[37, 13])], |x| {
        Ok(vec![ops::add::sum_rows(&x[0], 13)?])
    });
    compare("scale", &[rand_tensor(&mut r, &[1001])], |x| {
        Ok(vec![ops::scale::scale(&x[0], -0.37)?])
    });
    compare("permute", &[rand_tensor(&mut r, &[2, 3, 4, 5])], |x| {
        Ok(vec![ops::shape::permute(&x[0], &[3, 1, 0, 2])?])
    });
    let parts = [rand_tensor(&mut r, &[2, 1, 5]), rand_tensor(&mut r, &[2, 6, 5])];
    compare("concat", &parts, |x| Ok(vec![ops::concat::concat(&[&x[0], &x[1]], 1)?]));
    compare("slice", &[rand_tensor(&mut r, &[2, 7, 5])], |x| {
        Ok(vec![ops::concat::slice(&x[0], 1, 2, 3)?])
    });
    compare("unslice", &[rand_tensor(&mut r, &[2, 3, 5])], |x| {
        Ok(vec![ops::concat::unslice(&x[0], &[2, 7, 5], 1, 2)?])
    });
    compare("patchify", &[rand_tensor(&mut r, &[2, 3, 8, 12])], |x| {
        Ok(vec![ops::patchify::forward(&x[0], 4)?])
    });
    compare("patchify backward", &[rand_tensor(&mut r, &[2, 6, 48])], |x| {
        Ok(vec![ops::patchify::backward(&x[0], &[2, 3, 8, 12], 4)?])
    });
}

#[test]
fn matmul_linear_softmax_layernorm_match_cpu() {
    let _dev = gpu_or_skip!();
    let mut r = rng("dense");
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = rand_tensor(&mut r, if ta { &[2, 7, 9] } else { &[2, 9, 7] });
        let b = rand_tensor(&mut r, if tb { &[2, 11, 7] } else { &[2, 7, 11] });
        compare(&format!("matmul ta={ta} tb={tb}"), &[a, b], |x| {
            Ok(vec![ops::matmul::matmul(&x[0], &x[1], ta, tb)?])
        });
    }
    let (x, w, b) = (
        rand_tensor(&mut r, &[3, 13, 19]),
        rand_tensor(&mut r, &[23, 19]),
        rand_tensor(&mut r, &[23]),
    );
    compare("linear", &[x.clone(), w.clone(), b], |x| {
        Ok(vec![
            ops::linear::forward(&x[0], &x[1], Some(&x[2]))?,
            ops::linear::forward(&x[0], &x[1], None)?,
        ])
    });
    let g = rand_tensor(&mut r, &[3, 13, 23]);
    compare("linear backward", &[g, x, w], |x| {
        let [dx, dw, db] = ops::linear::backward(&x[0], &x[1], &x[2], [true, true, true])?;
        Ok(vec![dx.unwrap(), dw.unwrap(), db.unwrap()])
    });
    for n in [33, 1500] {
        let (x, g) = (rand_tensor(&mut r, &[5, n]), rand_tensor(&mut r, &[5, n]));
        compare(&format!("softmax n={n}"), &[x, g], |x| {
            let y = ops::softmax::forward(&x[0])?;
            let dx = ops::softmax::backward(&x[1], &y)?;
            Ok(vec![y, dx])
        });
    }
    let ln = [
        rand_tensor(&mut r, &[13, 37]),
        rand_tensor(&mut r, &[37]),
        rand_tensor(&mut r, &[37]),
        rand_tensor(&mut r, &[13, 37]),
    ];
    compare("layernorm", &ln, |x| {
        let (y, mean, rstd) = ops::layernorm::forward(&x[0], &x[1], &x[2], 1e-5)?;
        let (dx, dg, db) = ops::layernorm::backward(&x[3], &x[0], &x[1], &mean, &rstd)?;
        Ok(vec![y, mean, rstd, dx, dg, db])
    });
}

#[test]
fn activations_dropout_and_cross_entropy_match_cpu() {
    let _dev = gpu_or_skip!();
    let mut r = rng("activations");
    let (x, g) = (
        Tensor::from_vec(rand_vec(&mut r, 4099, -5.0, 5.0), &[4099]).unwrap(),
        rand_tensor(&mut r, &[4099]),
    );
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let mask = Mask::new(0.3, 77).unwrap();
        compare(&format!("gelu {kind:?}"), &[x.clone(), g.clone()], |x| {
            Ok(vec![
                ops::gelu::forward(&x[0], kind)?,
                ops::gelu::backward(&x[1], &x[0], kind)?,
                ops::gelu::forward_dropout(&x[0], kind, &mask)?,
                ops::gelu::backward_dropout(&x[1], &x[0], kind, &mask)?,
            ])
        });
    }
    compare("dropout", &[x.clone(), g.clone()], |x| {
        Ok(vec![
            ops::dropout::apply_mask(&x[0], 0.25, 5)?,
            ops::dropout::add_masked(&x[1], &x[0], 0.25, 5)?,
        ])
    });
    let labels: Vec<u32> = (0..37).map(|_| r.below(10) as u32).collect();
    let z = Tensor::from_vec(rand_vec(&mut r, 370, -4.0, 4.0), &[37, 10]).unwrap();
    compare("cross_entropy", &[z, Tensor::scalar(0.7)], |x| {
        let (loss, p) = ops::cross_entropy::forward(&x[0], &labels, 0.1)?;
        let dz = ops::cross_entropy::backward(&x[1], &p, &labels, 0.1)?;
        Ok(vec![loss, p, dz])
    });
}

#[test]
fn attention_matches_cpu_with_and_without_dropout() {
    let _dev = gpu_or_skip!();
    let mut r = rng("attention");
    // B 3, T 11, D 12 in 3 heads of 4: nothing a multiple of a tile or a warp.
    let (qkv, g) = (rand_tensor(&mut r, &[3, 11, 36]), rand_tensor(&mut r, &[3, 11, 12]));
    for p in [0.0, 0.2] {
        compare(&format!("attention p={p}"), &[qkv.clone(), g.clone()], |x| {
            let (out, probs) = ops::attention::forward(&x[0], 3, p, 99)?;
            let dqkv = ops::attention::backward(&x[1], &x[0], &probs, 3, p, 99)?;
            Ok(vec![out, probs, dqkv])
        });
    }
}

#[test]
fn autograd_runs_on_gpu_values() {
    let _dev = gpu_or_skip!();
    let mut r = rng("autograd");
    let (x, w) = (rand_tensor(&mut r, &[6, 5]), rand_tensor(&mut r, &[4, 5]));
    // The loss is the cross-entropy of (x + x)·Wᵀ: x feeds the add twice, so its gradient is
    // accumulated on the device, and backward() creates its seed on the loss's device.
    let run = |x: &Tensor, w: &Tensor| {
        let mut g = Graph::new();
        let (vx, vw) = (g.leaf(x.clone()), g.leaf(w.clone()));
        let twice = g.add(vx, vx).unwrap();
        let z = g.linear(twice, vw, None).unwrap();
        let loss = g.cross_entropy(z, &[0, 1, 2, 3, 0, 1], 0.0).unwrap();
        let grads = g.backward(loss).unwrap();
        let (gx, gw) = (grads.get(vx).unwrap().clone(), grads.get(vw).unwrap().clone());
        (g.value(loss).clone(), gx, gw)
    };
    let (loss_c, gx_c, gw_c) = run(&x, &w);
    let (loss_g, gx_g, gw_g) = run(&on_gpu(&x), &on_gpu(&w));
    for (what, c, g) in [("loss", &loss_c, &loss_g), ("dx", &gx_c, &gx_g), ("dw", &gw_c, &gw_g)] {
        assert_eq!(g.device(), Device::Cuda, "{what}");
        check_tol(what, &g.values().unwrap(), c.data(), OP_TOL);
    }
}

// ---- one whole ViT training step ------------------------------------------------------------

/// 12×12 images in 4×4 patches (10 tokens), D 24 in 3 heads of 8, MLP 40: small, and no size a
/// multiple of a GPU tile; dropout on, so the masks must agree too.
fn step_config() -> VitConfig {
    VitConfig {
        image_height: 12,
        image_width: 12,
        channels: 1,
        patch: 4,
        embed_dim: 24,
        depth: 2,
        heads: 3,
        mlp_dim: 40,
        num_classes: 10,
        dropout: 0.1,
        attn_dropout: 0.1,
        ln_eps: 1e-6,
        gelu: GeluKind::Erf,
        init: Init::Timm,
        identical_blocks: false,
    }
}

fn batch(r: &mut Rng, b: usize) -> (Tensor, Vec<u32>) {
    let images = Tensor::from_vec(rand_vec(r, b * 144, -1.0, 1.0), &[b, 1, 12, 12]).unwrap();
    (images, (0..b).map(|_| r.below(10) as u32).collect())
}

/// The training loop's forward and backward on the store's device; returns (loss, logits).
fn forward_backward(vit: &Vit, store: &mut ParamStore, images: &Tensor, labels: &[u32], seed: u64) -> (Tensor, Tensor) {
    let x = images.to_device(store.device()).unwrap();
    train::forward_backward(vit, store, x, labels, 0.1, seed).unwrap()
}

fn adamw() -> Adam {
    let cfg = AdamConfig {
        lr: 1e-3,
        weight_decay: 0.05,
        ..AdamConfig::default()
    };
    Adam::adamw(cfg).unwrap().with_no_decay(default_no_decay)
}

/// Every parameter's gradient in `gpu` on the GPU and within `STEP_TOL` of `cpu`'s.
fn grads_match(cpu: &ParamStore, gpu: &ParamStore) {
    for id in cpu.ids() {
        let name = cpu.name(id);
        let (gc, gg) = (cpu.grad(id).unwrap(), gpu.grad(id).unwrap());
        assert_eq!(gg.device(), Device::Cuda, "{name}");
        check_tol(&format!("grad {name}"), &gg.values().unwrap(), gc.data(), STEP_TOL);
    }
}

/// Every parameter of `gpu` within `OP_TOL` of `cpu`'s (after the same update).
fn params_match(cpu: &ParamStore, gpu: &ParamStore) {
    for id in cpu.ids() {
        let name = cpu.name(id);
        check_tol(
            &format!("param {name} after the step"),
            &gpu.value(id).values().unwrap(),
            cpu.value(id).data(),
            OP_TOL,
        );
    }
}

#[test]
fn vit_training_step_on_gpu_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("vit step");
    let mut cpu = ParamStore::new();
    let vit = Vit::new(step_config(), &mut cpu, 2024).unwrap();
    let mut gpu = cpu.clone();
    gpu.to_device(Device::Cuda).unwrap();
    assert_eq!(gpu.device(), Device::Cuda);
    let (images, labels) = batch(&mut r, 7);

    let (loss_c, logits_c) = forward_backward(&vit, &mut cpu, &images, &labels, 31);
    let (loss_g, logits_g) = forward_backward(&vit, &mut gpu, &images, &labels, 31);
    check_tol("loss", &loss_g.values().unwrap(), loss_c.data(), OP_TOL);
    check_tol("logits", &logits_g.values().unwrap(), logits_c.data(), OP_TOL);
    grads_match(&cpu, &gpu);

    // Clipping by value, on copies.
    let (mut cpu_v, mut gpu_v) = (cpu.clone(), gpu.clone());
    clip_grad_value(&mut cpu_v, 0.01).unwrap();
    clip_grad_value(&mut gpu_v, 0.01).unwrap();
    for id in cpu.ids() {
        let (gc, gg) = (cpu_v.grad(id).unwrap(), gpu_v.grad(id).unwrap());
        check_tol(
            &format!("value-clipped grad {}", cpu.name(id)),
            &gg.values().unwrap(),
            gc.data(),
            STEP_TOL,
        );
    }
    // Clipping by norm (a norm small enough to clip).
    let (norm_c, norm_g) = (
        clip_grad_norm(&mut cpu, 0.05).unwrap(),
        clip_grad_norm(&mut gpu, 0.05).unwrap(),
    );
    assert!(
        ((norm_g - norm_c) / norm_c).abs() < STEP_TOL,
        "gradient norm: gpu {norm_g} vs cpu {norm_c}"
    );
    // The update from the same gradients on both devices (the CPU's, uploaded): a gradient that
    // is zero in exact arithmetic (the key bias: softmax ignores a shift shared by a row) is
    // rounding noise of either sign on each device, and Adam's first step is about lr·sign(g).
    for id in cpu.ids() {
        *gpu.grad_mut(id).unwrap() = cpu.grad(id).unwrap().to_device(Device::Cuda).unwrap();
    }
    let (mut adam_c, mut adam_g) = (adamw(), adamw());
    adam_c.step(&mut cpu).unwrap();
    adam_g.step(&mut gpu).unwrap();
    params_match(&cpu, &gpu);
    drop(dev);
}

#[test]
fn flowers_options_step_on_gpu_matches_cpu() {
    // The flowers preset's architecture at a small size: 3 heads of key width 10 in a 24-wide
    // model (q, k, v 30 wide), the position embedding on the patches, dropout in the MLP only,
    // a softmax head, Keras's initialisers and LayerNorm eps, Adam with Keras's epsilon.
    let _dev = gpu_or_skip!();
    let mut r = rng("flowers step");
    let cfg = VitConfig {
        init: Init::Keras,
        ln_eps: 1e-3,
        attn_dropout: 0.0,
        ..step_config()
    };
    let opts = VitOptions {
        no_embed_class: true,
        key_dim: Some(10),
        embed_dropout: Some(0.0),
        attn_proj_dropout: Some(0.0),
        softmax_head: true,
        ..VitOptions::default()
    };
    let mut cpu = ParamStore::new();
    let vit = Vit::with_options(cfg, opts, &mut cpu, 77).unwrap();
    let mut gpu = cpu.clone();
    gpu.to_device(Device::Cuda).unwrap();
    let (images, labels) = batch(&mut r, 5);
    let (loss_c, logits_c) = forward_backward(&vit, &mut cpu, &images, &labels, 3);
    let (loss_g, logits_g) = forward_backward(&vit, &mut gpu, &images, &labels, 3);
    check_tol("loss", &loss_g.values().unwrap(), loss_c.data(), OP_TOL);
    check_tol("logits", &logits_g.values().unwrap(), logits_c.data(), OP_TOL);
    grads_match(&cpu, &gpu);
    // The softmax head's output on the device.
    let probs = |store: &ParamStore| {
        let mut g = Graph::no_grad();
        let x = images.to_device(store.device()).unwrap();
        let logits = vit.forward(&mut g, store, x, Mode::Eval).unwrap();
        let out = vit.output(&mut g, logits).unwrap();
        g.value(out).values().unwrap()
    };
    check_tol("softmax head", &probs(&gpu), &probs(&cpu), OP_TOL);
    for id in cpu.ids() {
        *gpu.grad_mut(id).unwrap() = cpu.grad(id).unwrap().to_device(Device::Cuda).unwrap();
    }
    let keras_adam = || {
        let cfg = AdamConfig {
            lr: 1e-3,
            eps: 1e-7,
            ..AdamConfig::default()
        };
        Adam::adam(cfg).unwrap().with_eps_hat(true)
    };
    keras_adam().step(&mut cpu).unwrap();
    keras_adam().step(&mut gpu).unwrap();
    params_match(&cpu, &gpu);
}

#[test]
fn pooled_model_step_on_gpu_matches_cpu() {
    // The default recipe's architecture: no class token, the head reading the patch tokens'
    // mean (a product with constant weights, on the device) through `fc_norm`.
    let _dev = gpu_or_skip!();
    let mut r = rng("pooled step");
    let opts = VitOptions {
        no_class_token: true,
        global_pool: GlobalPool::Avg,
        ..VitOptions::default()
    };
    let mut cpu = ParamStore::new();
    let vit = Vit::with_options(step_config(), opts, &mut cpu, 31).unwrap();
    let mut gpu = cpu.clone();
    gpu.to_device(Device::Cuda).unwrap();
    let (images, labels) = batch(&mut r, 5);
    let (loss_c, logits_c) = forward_backward(&vit, &mut cpu, &images, &labels, 4);
    let (loss_g, logits_g) = forward_backward(&vit, &mut gpu, &images, &labels, 4);
    check_tol("loss", &loss_g.values().unwrap(), loss_c.data(), OP_TOL);
    check_tol("logits", &logits_g.values().unwrap(), logits_c.data(), OP_TOL);
    grads_match(&cpu, &gpu);
}

#[test]
fn eval_forward_on_gpu_matches_cpu() {
    let _dev = gpu_or_skip!();
    let mut r = rng("vit eval");
    let mut cpu = ParamStore::new();
    let vit = Vit::new(step_config(), &mut cpu, 7).unwrap();
    let mut gpu = cpu.clone();
    gpu.to_device(Device::Cuda).unwrap();
    let (images, _) = batch(&mut r, 5);
    let logits = |store: &ParamStore| {
        let mut g = Graph::no_grad();
        let x = images.to_device(store.device()).unwrap();
        let v = vit.forward(&mut g, store, x, Mode::Eval).unwrap();
        g.value(v).values().unwrap()
    };
    check_tol("eval logits", &logits(&gpu), &logits(&cpu), OP_TOL);
}

#[test]
fn training_steps_allocate_nothing_in_the_steady_state() {
    let dev = gpu_or_skip!();
    let mut r = rng("steady state");
    // The class-token model, and the default recipe's pooled one (whose mean weights are a new
    // small tensor each forward: it must come from the pool, not from the device).
    let pooled = VitOptions {
        no_class_token: true,
        global_pool: GlobalPool::Avg,
        ..VitOptions::default()
    };
    for opts in [VitOptions::default(), pooled] {
        let mut store = ParamStore::new();
        let vit = Vit::with_options(step_config(), opts.clone(), &mut store, 3).unwrap();
        store.to_device(Device::Cuda).unwrap();
        let mut adam = adamw();
        let (images, labels) = batch(&mut r, 9);
        let mut allocs = Vec::new();
        for step in 0..4u64 {
            let (loss, _) = forward_backward(&vit, &mut store, &images, &labels, step);
            clip_grad_norm(&mut store, 1.0).unwrap();
            adam.step(&mut store).unwrap();
            assert!(loss.item().unwrap().is_finite());
            allocs.push(dev.pool_stats().device_allocs);
        }
        println!("{opts:?}: device allocations after each step: {allocs:?}");
        assert_eq!(
            allocs[1], allocs[3],
            "{opts:?}: steps 3 and 4 allocated device memory: {allocs:?}"
        );
    }
}

// ---- without a GPU --------------------------------------------------------------------------

#[test]
fn a_missing_gpu_is_an_error_not_a_panic() {
    if cuda_available().is_ok() {
        println!("skipped: a GPU is present");
        return;
    }
    let t = Tensor::ones(&[3]);
    let e = t.to_device(Device::Cuda).unwrap_err().to_string();
    assert!(e.starts_with("device: "), "{e}");
    assert!(Tensor::zeros_on(&[2], Device::Cuda).is_err());
    assert!(t.cuda().is_err(), "a CPU tensor has no device buffer");
    let mut store = ParamStore::new();
    store.add("w", Tensor::ones(&[2])).unwrap();
    assert!(store.to_device(Device::Cuda).is_err());
    assert_eq!(store.device(), Device::Cpu, "a failed move leaves the store on the CPU");
}
