//! Fine-tuning from pretrained ViTs: timm's and Hugging Face's checkpoints (made by
//! `tests/fixtures/make_timm_fixture.py` with timm itself, random weights, small sizes) give
//! timm's logits at the native size, at a larger and a smaller size (the position embedding
//! resampled as timm's `checkpoint_filter_fn` does), and under Hugging Face's names and
//! LayerNorm eps; the head is replaced for another class count; impossible shapes are an error
//! naming each tensor; `--freeze backbone` trains the head only; `predict CKPT --heads N`.

mod cli_common;

use cli_common::*;
use std::path::{Path, PathBuf};
use vitcore::autograd::{Graph, ParamStore};
use vitcore::checkpoint;
use vitcore::nn::{Mode, Vit};
use vitcore::pretrained::{Layout, Pretrained};
use vitcore::train::layer_decay_scale;
use vitcore::Tensor;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

fn expected(name: &str) -> Tensor {
    let (tensors, _) = checkpoint::load(fixture("timm_vit_expected.safetensors")).unwrap();
    tensors.into_iter().find(|(n, _)| n == name).unwrap().1
}

/// The logits of the checkpoint `file` at `size` (native when `None`) with `classes` outputs.
fn logits(file: &str, size: Option<usize>, input: &str) -> (Vec<f32>, Vec<String>) {
    let path = fixture(file);
    let pre = Pretrained::read(&path).unwrap();
    let (cfg, opts) = pre.vit_config(&path, 3, size, None).unwrap();
    let mut store = ParamStore::new();
    let vit = Vit::with_options(cfg, opts, &mut store, 1).unwrap();
    let notes = pre.load_into(&path, &vit, &mut store).unwrap();
    let mut g = Graph::no_grad();
    let out = vit.forward(&mut g, &store, expected(input), Mode::Eval).unwrap();
    (g.value(out).values().unwrap().to_vec(), notes)
}

fn assert_close(got: &[f32], want: &Tensor, what: &str) {
    let want = want.values().unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 2e-4,
        "{what}: max |vitcore − timm| = {worst}\n{got:?}\n{want:?}"
    );
}

#[test]
fn timm_checkpoint_gives_timm_logits_at_the_native_size() {
    let pre = Pretrained::read(&fixture("timm_vit.safetensors")).unwrap();
    assert_eq!(pre.layout, Layout::Timm);
    let (cfg, opts) = pre.vit_config(&fixture("timm_vit.safetensors"), 3, None, None).unwrap();
    assert_eq!(
        (
            cfg.image_height,
            cfg.patch,
            cfg.embed_dim,
            cfg.depth,
            cfg.mlp_dim,
            cfg.num_classes,
            cfg.ln_eps
        ),
        (32, 8, 48, 2, 192, 7, 1e-6)
    );
    assert!(!opts.no_embed_class);
    let (got, notes) = logits("timm_vit.safetensors", None, "input32");
    assert!(notes.is_empty(), "{notes:?}");
    assert_close(&got, &expected("logits32"), "native 32x32");
}

#[test]
fn position_embedding_is_resampled_as_timm_does_up_and_down() {
    for (size, name) in [(48, "48"), (24, "24")] {
        let (got, notes) = logits("timm_vit.safetensors", Some(size), &format!("input{name}"));
        assert!(notes.iter().any(|n| n.contains("resampled")), "{notes:?}");
        assert_close(&got, &expected(&format!("logits{name}")), &format!("{size}x{size}"));
    }
}

#[test]
fn hugging_face_names_and_eps_give_the_same_model() {
    let pre = Pretrained::read(&fixture("hf_vit.safetensors")).unwrap();
    assert_eq!(pre.layout, Layout::HuggingFace);
    let (got, _) = logits("hf_vit.safetensors", None, "input32");
    assert_close(&got, &expected("logits32_hf"), "Hugging Face names, eps 1e-12");
}

#[test]
fn another_class_count_replaces_the_head_and_impossible_shapes_name_each_tensor() {
    let path = fixture("timm_vit.safetensors");
    let pre = Pretrained::read(&path).unwrap();
    let (cfg, opts) = pre.vit_config(&path, 3, None, Some(4)).unwrap();
    let mut store = ParamStore::new();
    let vit = Vit::with_options(cfg.clone(), opts.clone(), &mut store, 1).unwrap();
    let notes = pre.load_into(&path, &vit, &mut store).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("head replaced") && n.contains("7 classes → 4")),
        "{notes:?}"
    );
    let w = store.value(store.id("blocks.1.mlp.fc2.weight").unwrap());
    assert_eq!(
        w.values().unwrap(),
        pre.tensors["blocks.1.mlp.fc2.weight"].values().unwrap()
    );

    // A model of another width and MLP: every tensor that cannot match is listed.
    let mut wide = cfg;
    wide.embed_dim = 64;
    wide.heads = 4;
    let mut store = ParamStore::new();
    let vit = Vit::with_options(wide, opts, &mut store, 1).unwrap();
    let e = pre.load_into(&path, &vit, &mut store).unwrap_err().to_string();
    for name in [
        "patch_embed.proj.weight",
        "cls_token",
        "blocks.0.attn.qkv.weight",
        "blocks.1.mlp.fc1.weight",
    ] {
        assert!(e.contains(&format!("`{name}`")), "{name} not named:\n{e}");
    }
    assert!(e.contains("[48, 3, 8, 8]") && e.contains("[64, 3, 8, 8]"), "{e}");
}

#[test]
fn layer_decay_scales_from_the_head_down_to_the_embeddings() {
    let d = 0.5;
    assert_eq!(layer_decay_scale("head.weight", 2, d), 1.0);
    assert_eq!(layer_decay_scale("norm.bias", 2, d), 1.0);
    assert_eq!(layer_decay_scale("blocks.1.attn.qkv.weight", 2, d), 0.5);
    assert_eq!(layer_decay_scale("blocks.0.norm1.weight", 2, d), 0.25);
    assert_eq!(layer_decay_scale("pos_embed", 2, d), 0.125);
    assert_eq!(layer_decay_scale("patch_embed.proj.bias", 2, d), 0.125);
}

fn write_photos(root: &Path) {
    vitcore(
        [
            "make-dataset",
            "inspection",
            "--per-class",
            "6",
            "--size",
            "40",
            "--mislabeled",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([root.display().to_string()]),
    )
    .ok();
}

#[test]
fn freeze_backbone_trains_the_head_only_and_predict_runs_a_bare_checkpoint() {
    let tmp = TempDir::new("pretrained");
    let data = tmp.join("parts");
    write_photos(&data);
    let ckpt = fixture("timm_vit.safetensors");
    let run = tmp.join("run");
    let r = vitcore([
        "train".into(),
        "folder".into(),
        data.as_os_str().to_owned(),
        "--init".into(),
        ckpt.as_os_str().to_owned(),
        "--heads".into(),
        "3".into(),
        "--freeze".into(),
        "backbone".into(),
        "--image-size".into(),
        "40".into(),
        "--epochs".into(),
        "1".into(),
        "--batch-size".into(),
        "8".into(),
        "--quiet".into(),
        "--out".into(),
        run.as_os_str().to_owned(),
    ])
    .ok();
    assert!(
        r.stdout.contains("head replaced") && r.stdout.contains("resampled"),
        "{}",
        r.stdout
    );
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(
        cfg["channel_norm"][0][0].as_f64().map(|v| (v * 1000.0).round()),
        Some(485.0)
    );
    let (trained, _) = checkpoint::load(run.join("last.safetensors")).unwrap();
    let pre = Pretrained::read(&ckpt).unwrap();
    let get = |n: &str| {
        trained
            .iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .values()
            .unwrap()
            .to_vec()
    };
    assert_eq!(
        get("blocks.0.attn.qkv.weight"),
        pre.tensors["blocks.0.attn.qkv.weight"].values().unwrap().to_vec()
    );
    assert_eq!(
        get("norm.weight"),
        pre.tensors["norm.weight"].values().unwrap().to_vec()
    );
    assert_eq!(get("head.weight").len(), 4 * 48);

    // A bare checkpoint, as it is: its 7 classes by index, --heads required.
    let img = data.join("ok/part_00006.jpg");
    let r = vitcore([
        "predict".into(),
        ckpt.as_os_str().to_owned(),
        "--heads".into(),
        "3".into(),
        "--top-k".into(),
        "3".into(),
        "--input".into(),
        img.as_os_str().to_owned(),
    ])
    .ok();
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    let r = vitcore([
        "predict".into(),
        ckpt.as_os_str().to_owned(),
        "--input".into(),
        img.as_os_str().to_owned(),
    ]);
    r.fails_mentioning(&["--heads"]);
}

#[test]
fn a_checkpoint_without_a_class_token_is_read_as_the_pooled_model() {
    // vitcore's default recipe saves no `cls_token` and an `fc_norm`: read as a bare
    // checkpoint (what `predict CKPT --heads N` does), it builds the same model and gives the
    // same logits, at its own size and resampled to a larger one.
    use vitcore::nn::{GlobalPool, VitOptions};
    let tmp = TempDir::new("pooled-ckpt");
    let mut cfg = vitcore::train::TrainConfig::default_preset().model;
    (cfg.embed_dim, cfg.heads, cfg.mlp_dim, cfg.depth) = (16, 2, 32, 2);
    cfg.ln_eps = 1e-6; // timm's, which a bare checkpoint is read with
    let opts = VitOptions {
        no_class_token: true,
        global_pool: GlobalPool::Avg,
        ..VitOptions::default()
    };
    let mut store = ParamStore::new();
    let vit = Vit::with_options(cfg, opts.clone(), &mut store, 9).unwrap();
    let path = tmp.join("pooled.safetensors");
    let tensors: Vec<(String, &Tensor)> = store
        .ids()
        .map(|id| (store.name(id).to_string(), store.value(id)))
        .collect();
    checkpoint::save(&path, &tensors, &Default::default()).unwrap();
    let x = Tensor::from_vec(vitcore::rng::Rng::new(2).normal_vec(2 * 784, 1.0), &[2, 1, 28, 28]).unwrap();
    let run = |vit: &Vit, store: &ParamStore, x: &Tensor| {
        let mut g = Graph::no_grad();
        let y = vit.forward(&mut g, store, x.clone(), Mode::Eval).unwrap();
        g.value(y).values().unwrap().to_vec()
    };
    let want = run(&vit, &store, &x);

    let pre = Pretrained::read(&path).unwrap();
    let (cfg2, opts2) = pre.vit_config(&path, 2, None, None).unwrap();
    assert_eq!(opts2.global_pool, GlobalPool::Avg);
    assert!(opts2.no_class_token);
    let mut store2 = ParamStore::new();
    let vit2 = Vit::with_options(cfg2, opts2.clone(), &mut store2, 1).unwrap();
    pre.load_into(&path, &vit2, &mut store2).unwrap();
    assert_eq!(run(&vit2, &store2, &x), want);

    // At 35×35 (25 patches), the 16 positions are resampled with no class position.
    let (big, opts3) = pre.vit_config(&path, 2, Some(35), None).unwrap();
    let mut store3 = ParamStore::new();
    let vit3 = Vit::with_options(big, opts3, &mut store3, 1).unwrap();
    let notes = pre.load_into(&path, &vit3, &mut store3).unwrap();
    assert!(notes.iter().any(|n| n.contains("from 16 to 25 positions")), "{notes:?}");
    let pos = store3.value(store3.id("pos_embed").unwrap());
    assert_eq!(pos.shape(), [1, 25, 16]);
}
