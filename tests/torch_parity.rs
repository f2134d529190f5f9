//! PyTorch parity: the seed-preset ViT in vitcore against the same model in PyTorch.
//!
//! `tests/fixtures/make_torch_fixture.py` built the model from stock PyTorch modules
//! (`nn.TransformerEncoderLayer(norm_first=True, batch_first=True, activation="gelu")`), ran one
//! batch of 8 real MNIST test images forward and backward in float64, and saved the weights under
//! timm names together with the logits, the loss and every parameter's gradient. Here vitcore
//! loads those weights, runs the same batch, and must match all of it.
//! Tolerance: relative error ≤ 1e-4 (f32 engine vs f64 reference), per tensor.

mod common;

use common::rel_err_f32;
use std::collections::HashMap;
use vitcore::checkpoint;
use vitcore::nn::{Mode, Vit};
use vitcore::train::TrainConfig;
use vitcore::{Graph, ParamStore, Tensor};

const TOL: f64 = 1e-4;

fn fixture() -> HashMap<String, Tensor> {
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let (tensors, _meta) =
        checkpoint::load(format!("{root}/tests/fixtures/torch_seed_vit.safetensors")).expect("fixture loads");
    tensors.into_iter().collect()
}

#[test]
fn seed_preset_matches_pytorch_logits_loss_and_every_gradient() {
    let fx = fixture();
    let mut cfg = TrainConfig::seed_preset().model;
    cfg.identical_blocks = false;
    let mut store = ParamStore::new();
    let vit = Vit::new(cfg, &mut store, 0).unwrap();
    let params: Vec<(String, Tensor)> = store
        .ids()
        .map(|id| (store.name(id).to_string(), fx[store.name(id)].clone()))
        .collect();
    checkpoint::assign_params("fixture", &params, &mut store).unwrap();

    let input = fx["input"].clone();
    let labels: Vec<u32> = fx["labels"].data().iter().map(|&v| v as u32).collect();
    let mut g = Graph::new();
    let logits = vit.forward(&mut g, &store, input, Mode::Eval).unwrap();
    let loss = g.cross_entropy(logits, &labels, 0.0).unwrap();

    let e = rel_err_f32(g.value(logits).data(), fx["logits"].data());
    assert!(e <= TOL, "logits rel err {e}");
    let e = rel_err_f32(g.value(loss).data(), fx["loss"].data());
    assert!(e <= TOL, "loss rel err {e}");

    let grads = g.backward(loss).unwrap();
    store.accumulate_grads(&grads).unwrap();
    let mut checked = 0;
    for id in store.ids() {
        let name = store.name(id);
        let got = store.grad(id).unwrap_or_else(|| panic!("no gradient for {name}"));
        let want = &fx[&format!("grad.{name}")];
        assert_eq!(got.shape(), want.shape(), "{name}");
        let e = rel_err_f32(got.data(), want.data());
        assert!(e <= TOL, "gradient of {name}: rel err {e}");
        checked += 1;
    }
    assert_eq!(checked, 56, "every parameter of the seed preset is checked");
}
