//! `--preset flowers`, the Keras flowers write-up's model (QEUR23_VTRANS2): its parameter count
//! derived from the Keras layers, its initialisers, and each architecture option it sets
//! (`VitOptions`: per-head key width, position embedding on the patches, no dropout on the
//! embedding or the attention branch, softmax head) checked for what it does; a small run of
//! the preset end to end. Nothing here trains the 398M-parameter model itself.

mod cli_common;
mod common;

use cli_common::*;
use common::rel_err_f32;
use vitcore::data::Dataset;
use vitcore::nn::{Mode, Vit, VitConfig, VitOptions};
use vitcore::rng::Rng;
use vitcore::train::{self, TrainConfig};
use vitcore::{Graph, ParamStore, Tensor};

/// The write-up's `hp`: image 200, 3 channels, patch 25, hidden 768, 12 layers, 12 heads,
/// MLP 3072, 5 classes; `MultiHeadAttention(num_heads=12, key_dim=hidden_dim)`.
const IMAGE: usize = 200;
const CHANNELS: usize = 3;
const PATCH: usize = 25;
const HIDDEN: usize = 768;
const LAYERS: usize = 12;
const HEADS: usize = 12;
const KEY_DIM: usize = HIDDEN;
const MLP: usize = 3072;
const CLASSES: usize = 5;

/// What Keras's `model.summary()` would count for the write-up's `ViT(hp)`, layer by layer
/// (every `Dense` and `EinsumDense` has a bias: `use_bias=True` is Keras's default):
/// `(per encoder layer, total)`.
fn keras_parameter_count() -> (usize, usize) {
    let n = (IMAGE / PATCH) * (IMAGE / PATCH); // 64 patches
                                               // Dense(hidden_dim) on each flattened patch of 25·25·3 = 1875 values.
    let patch_embed = PATCH * PATCH * CHANNELS * HIDDEN + HIDDEN;
    // Embedding(input_dim=num_patches, output_dim=hidden_dim): the patches only.
    let pos_embed = n * HIDDEN;
    // ClassToken: one (1, 1, hidden_dim) variable.
    let cls_token = HIDDEN;
    // LayerNormalization: gamma and beta.
    let layer_norm = 2 * HIDDEN;
    // MultiHeadAttention: query, key and value EinsumDense kernels [D, heads, key_dim] with
    // biases [heads, key_dim] (value_dim = key_dim), and the output kernel [heads, key_dim, D]
    // with a bias [D].
    let qkv = 3 * (HIDDEN * HEADS * KEY_DIM + HEADS * KEY_DIM);
    let attention_output = HEADS * KEY_DIM * HIDDEN + HIDDEN;
    // mlp(): Dense(mlp_dim, gelu) then Dense(hidden_dim).
    let mlp = (HIDDEN * MLP + MLP) + (MLP * HIDDEN + HIDDEN);
    let per_layer = 2 * layer_norm + qkv + attention_output + mlp;
    // The final LayerNormalization, then Dense(num_classes, softmax) on the class token: the
    // write-up has no hidden layer in its head.
    let head = CLASSES * HIDDEN + CLASSES;
    let total = patch_embed + pos_embed + cls_token + LAYERS * per_layer + layer_norm + head;
    (per_layer, total)
}

#[test]
fn flowers_preset_has_the_keras_models_parameters_shapes_and_initialisers() {
    let (per_layer, total) = keras_parameter_count();
    assert_eq!((per_layer, total), (33_065_472, 398_281_733));

    let cfg = TrainConfig::flowers_preset();
    cfg.validate().unwrap();
    let (vit, store) = train::build_model(&cfg).unwrap();
    assert_eq!(store.numel(), total);
    let block0: usize = store
        .ids()
        .filter(|&id| store.name(id).starts_with("blocks.0."))
        .map(|id| store.value(id).numel())
        .sum();
    assert_eq!(block0, per_layer);
    let inner = HEADS * KEY_DIM; // 9216
    let value = |name: &str| {
        let id = store
            .ids()
            .find(|&id| store.name(id) == name)
            .unwrap_or_else(|| panic!("{name}"));
        store.value(id).clone()
    };
    for (name, shape) in [
        ("patch_embed.proj.weight", vec![HIDDEN, CHANNELS, PATCH, PATCH]),
        ("cls_token", vec![1, 1, HIDDEN]),
        ("pos_embed", vec![1, 64, HIDDEN]),
        ("blocks.11.attn.qkv.weight", vec![3 * inner, HIDDEN]),
        ("blocks.11.attn.qkv.bias", vec![3 * inner]),
        ("blocks.11.attn.proj.weight", vec![HIDDEN, inner]),
        ("blocks.11.mlp.fc1.weight", vec![MLP, HIDDEN]),
        ("head.weight", vec![CLASSES, HIDDEN]),
    ] {
        assert_eq!(value(name).shape(), &shape[..], "{name}");
    }
    assert_eq!(vit.key_dim(), KEY_DIM);

    // Keras's initialisers: Glorot-uniform bounds √(6/(fan_in+fan_out)), with the fans Keras
    // computes for MultiHeadAttention's 3-D kernels; U(±0.05) positions; N(0, 0.05²) class
    // token; zero biases; layernorms 1 and 0.
    let glorot = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f64).sqrt();
    let within = |name: &str, bound: f64| {
        let v = value(name).to_vec();
        let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        let rms = (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        // A uniform on ±b has RMS b/√3; it must fill its range, not sit inside it.
        assert!(
            max <= bound * (1.0 + 1e-6) && max > 0.99 * bound,
            "{name}: max {max}, bound {bound}"
        );
        assert!(
            (rms / (bound / 3f64.sqrt()) - 1.0).abs() < 0.02,
            "{name}: rms {rms}, bound {bound}"
        );
    };
    within("patch_embed.proj.weight", glorot(PATCH * PATCH * CHANNELS, HIDDEN));
    within("pos_embed", 0.05);
    within("blocks.0.attn.qkv.weight", glorot(HEADS * HIDDEN, KEY_DIM * HIDDEN));
    within("blocks.0.attn.proj.weight", glorot(KEY_DIM * HEADS, HIDDEN * HEADS));
    within("blocks.5.mlp.fc1.weight", glorot(HIDDEN, MLP));
    within("blocks.5.mlp.fc2.weight", glorot(MLP, HIDDEN));
    let cls = value("cls_token").to_vec();
    let std = (cls.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / cls.len() as f64).sqrt();
    assert!((std - 0.05).abs() < 0.006, "class token std {std}");
    for name in [
        "blocks.3.attn.qkv.bias",
        "blocks.3.attn.proj.bias",
        "head.bias",
        "blocks.3.norm1.bias",
    ] {
        assert!(value(name).to_vec().iter().all(|&x| x == 0.0), "{name}");
    }
    assert!(value("norm.weight").to_vec().iter().all(|&x| x == 1.0));
}

#[test]
fn summary_of_the_flowers_preset_prints_the_keras_count() {
    let r = vitcore(words("summary --preset flowers")).ok();
    assert!(r.stdout.contains("total parameters: 398,281,733"), "{}", r.stdout);
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("blocks.0.attn.qkv ").contains("[65, 27648]"), "{}", r.stdout);
    assert!(line("pos_embed").contains("[64, 768]"), "{}", r.stdout);
    assert!(line("head").contains("Linear + softmax"), "{}", r.stdout);
}

/// A small model with the given options, its parameters and a batch of 3 images.
fn small(opts: VitOptions, dropout: f32) -> (Vit, ParamStore, Tensor) {
    let cfg = VitConfig {
        image_height: 12,
        image_width: 12,
        channels: 3,
        patch: 4,
        embed_dim: 12,
        depth: 2,
        heads: 3,
        mlp_dim: 20,
        num_classes: 5,
        dropout,
        attn_dropout: 0.0,
        ln_eps: 1e-3,
        gelu: vitcore::ops::GeluKind::Erf,
        init: vitcore::nn::Init::Keras,
        identical_blocks: false,
    };
    let mut store = ParamStore::new();
    let vit = Vit::with_options(cfg, opts, &mut store, 11).unwrap();
    let x = Tensor::from_vec(Rng::new(4).normal_vec(3 * 3 * 144, 1.0), &[3, 3, 12, 12]).unwrap();
    (vit, store, x)
}

#[test]
fn heads_of_their_own_width_train_alike_fused_and_composed() {
    // key_dim 5 with 3 heads: q, k, v of 15 features in a 12-wide model.
    let opts = VitOptions {
        key_dim: Some(5),
        no_embed_class: true,
        ..VitOptions::default()
    };
    let (mut vit, store, x) = small(opts, 0.1);
    assert_eq!(store.value(vit.blocks[0].attn.qkv.weight).shape(), &[45, 12]);
    assert_eq!(store.value(vit.blocks[0].attn.proj.weight).shape(), &[12, 15]);
    let mut results = Vec::new();
    for fused in [true, false] {
        vit.fused_attention = fused;
        let mut g = Graph::new();
        let logits = vit.forward(&mut g, &store, x.clone(), Mode::Train { seed: 5 }).unwrap();
        let loss = g.cross_entropy(logits, &[0, 3, 4], 0.0).unwrap();
        let grads = g.backward(loss).unwrap();
        let mut s = store.clone();
        s.zero_grad();
        s.accumulate_grads(&grads).unwrap();
        let all: Vec<f32> = s.ids().flat_map(|id| s.grad(id).unwrap().to_vec()).collect();
        results.push((g.value(logits).to_vec(), all));
    }
    assert!(rel_err_f32(&results[0].0, &results[1].0) <= 1e-5);
    assert!(rel_err_f32(&results[0].1, &results[1].1) <= 1e-5);
    // The attention maps come from the composed path: [B, h, T, T], rows summing to 1.
    let (_, weights) = vit.forward_with_attention(&store, x).unwrap();
    assert_eq!(weights[0].shape(), &[3, 3, 10, 10]);
}

#[test]
fn embed_and_attention_branch_dropout_options_turn_those_sites_off() {
    // With the MLP's output layer zeroed, the MLP branch adds exactly 0 whatever its dropout
    // does, so a training pass equals the evaluation pass exactly when the embedding and the
    // attention branch have no dropout (the Keras model), and not when they take --dropout.
    let eval_and_train = |opts: VitOptions| {
        let (vit, mut store, x) = small(opts, 0.3);
        for b in &vit.blocks {
            for id in [b.mlp.fc2.weight, b.mlp.fc2.bias] {
                let shape = store.value(id).shape().to_vec();
                store.set(id, Tensor::zeros(&shape)).unwrap();
            }
        }
        let run = |mode| {
            let mut g = Graph::no_grad();
            let y = vit.forward(&mut g, &store, x.clone(), mode).unwrap();
            g.value(y).to_vec()
        };
        (run(Mode::Eval), run(Mode::Train { seed: 8 }))
    };
    let keras = VitOptions {
        embed_dropout: Some(0.0),
        attn_proj_dropout: Some(0.0),
        ..VitOptions::default()
    };
    let (eval, trained) = eval_and_train(keras);
    assert_eq!(eval, trained);
    for one_on in [
        VitOptions {
            embed_dropout: Some(0.0),
            ..VitOptions::default()
        },
        VitOptions {
            attn_proj_dropout: Some(0.0),
            ..VitOptions::default()
        },
    ] {
        let (eval, trained) = eval_and_train(one_on.clone());
        assert_ne!(eval, trained, "{one_on:?}");
    }
}

#[test]
fn a_softmax_head_outputs_probabilities_with_the_same_loss_and_predictions() {
    let plain = small(VitOptions::default(), 0.0);
    let softmax = small(
        VitOptions {
            softmax_head: true,
            ..VitOptions::default()
        },
        0.0,
    );
    // The option draws nothing: both models have the same parameters.
    let outputs: Vec<Vec<f32>> = [&plain, &softmax]
        .iter()
        .map(|(vit, store, x)| {
            let mut g = Graph::no_grad();
            let logits = vit.forward(&mut g, store, x.clone(), Mode::Eval).unwrap();
            let out = vit.output(&mut g, logits).unwrap();
            g.value(out).to_vec()
        })
        .collect();
    for (logits, probs) in outputs[0].chunks(5).zip(outputs[1].chunks(5)) {
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{probs:?}");
        let from_logits = plain.0.probabilities(logits);
        assert!(rel_err_f32(probs, &from_logits) < 1e-6);
        // Never softmaxed twice.
        assert_eq!(softmax.0.probabilities(probs), probs);
    }
    // eval: the same loss (the cross-entropy of the logits beneath the softmax, as Keras's)
    // and the same predictions and probabilities.
    let mut cfg = TrainConfig::flowers_preset();
    cfg.model = plain.0.cfg.clone();
    let pixels: Vec<u8> = (0..4 * 3 * 144).map(|i| (i * 37 % 256) as u8).collect();
    let ds = Dataset::new(pixels, Some(vec![0, 1, 2, 4]), [3, 12, 12], 5).unwrap();
    let a = train::evaluate(&plain.0, &plain.1, &ds, &cfg, true).unwrap();
    let b = train::evaluate(&softmax.0, &softmax.1, &ds, &cfg, true).unwrap();
    assert_eq!((a.loss, &a.predictions), (b.loss, &b.predictions));
    for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
        assert!(rel_err_f32(q, p) < 1e-6, "{p:?} {q:?}");
    }
}

#[test]
fn model_options_are_validated_with_clear_errors() {
    let base = TrainConfig::flowers_preset();
    let err = |f: &dyn Fn(&mut TrainConfig)| {
        let mut c = base.clone();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(err(&|c| c.model_options.key_dim = Some(0)).contains("key_dim must be positive"));
    assert!(err(&|c| c.model_options.embed_dropout = Some(1.0)).contains("embed_dropout"));
    assert!(err(&|c| c.model_options.attn_proj_dropout = Some(-0.1)).contains("attn_proj_dropout"));
    // With a key width of their own the heads need not divide the embedding...
    let mut c = base.clone();
    c.model.heads = 7;
    c.validate().unwrap();
    // ...without one they must, and the error says how else to get there.
    c.model_options.key_dim = None;
    assert!(c.validate().unwrap_err().to_string().contains("--key-dim"));
}

/// The preset end to end at a size that runs in seconds: 4 classes of generated photos read at
/// 25×25 with patch 5, every option of the preset kept (key width, position embedding,
/// dropout sites, softmax head, Keras initialisers and LayerNorm epsilon, Adam with Keras's
/// epsilon and clipping by value, Keras's plateau rule), then `predict` on the folder.
#[test]
fn a_small_run_of_the_flowers_preset_trains_saves_its_options_and_predicts() {
    let tmp = TempDir::new("flowers");
    let data = tmp.join("set");
    vitcore(args_with(
        "make-dataset inspection --per-class 10 --size 40 --mislabeled 0",
        &[&data],
    ))
    .ok();
    let run = tmp.join("run");
    let r = vitcore(args_with(
        &format!(
            "train folder {} --preset flowers --image-size 25 --patch 5 --embed-dim 16 --depth 2 --heads 2 \
             --key-dim 16 --mlp-dim 32 --epochs 2 --quiet --out",
            data.display()
        ),
        &[&run],
    ))
    .ok();
    assert!(r.stdout.contains("on 32 images, validating on 4"), "{}", r.stdout);
    let c = read_json(&run.join("config.json"));
    assert_eq!(c["preset"], "flowers");
    assert_eq!(
        c["model_options"],
        serde_json::json!({"no_embed_class": true, "key_dim": 16, "embed_dropout": 0.0,
                           "attn_proj_dropout": 0.0, "softmax_head": true})
    );
    let m = &c["model"];
    assert_eq!((m["init"].as_str(), m["ln_eps"].as_f64()), (Some("keras"), Some(1e-3)));
    assert_eq!(
        (m["dropout"].as_f64(), m["attn_dropout"].as_f64()),
        (Some(0.1), Some(0.0))
    );
    assert_eq!(
        (c["batch_size"].as_u64(), c["clip_value"].as_f64()),
        (Some(16), Some(1.0))
    );
    assert_eq!(
        (
            c["schedule"].as_str(),
            c["plateau_patience"].as_u64(),
            c["plateau_factor"].as_f64()
        ),
        (Some("plateau-keras"), Some(10), Some(0.1))
    );
    assert_eq!((c["eps"].as_f64(), c["eps_hat"].as_bool()), (Some(1e-7), Some(true)));
    assert_eq!(
        (c["lr"].as_f64(), c["min_lr"].as_f64(), c["early_stopping"].as_u64()),
        (Some(1e-4), Some(1e-10), Some(50))
    );
    assert_eq!(log_rows(&run).len(), 2);
    // A different key width on resume would be another model: refused, naming the flag.
    vitcore(args_with("train folder --key-dim 8 --quiet --resume", &[&run]))
        .fails_mentioning(&["--key-dim 8", "model_options.key_dim = 16"]);

    let csv = tmp.join("pred.csv");
    let flag = |f: &'static str| std::path::Path::new(f);
    vitcore(args_with(
        "predict",
        &[&run, flag("--input"), &data, flag("--out"), &csv],
    ))
    .ok();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + 40);
    for row in text.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let p: f64 = (1..=4).map(|k| f[2 * k].parse::<f64>().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-4, "{row}");
    }
}

/// `bench loader` end to end on a small generated set: every image decoded once and delivered
/// once by the epoch, at the preset's input size, with both rates in the record.
#[test]
fn bench_loader_times_decoding_and_an_epoch_of_every_image() {
    let tmp = TempDir::new("bench-loader");
    let data = tmp.join("set");
    vitcore(args_with(
        "make-dataset inspection --per-class 6 --size 48 --mislabeled 0",
        &[&data],
    ))
    .ok();
    let json = tmp.join("loader.json");
    let r = vitcore(args_with(
        "bench loader --preset flowers --image-size 50 --json",
        &[&json, &data],
    ))
    .ok();
    let rec = read_json(&json);
    assert_eq!(serde_json::from_str::<serde_json::Value>(r.stdout.trim()).unwrap(), rec);
    assert_eq!(
        (rec["images"].as_u64(), rec["image_size"].as_u64()),
        (Some(24), Some(50))
    );
    assert_eq!(
        (rec["preset"].as_str(), rec["batch"].as_u64()),
        (Some("flowers"), Some(16))
    );
    for key in ["decode_images_per_s", "epoch_images_per_s", "file_mib"] {
        assert!(rec[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {rec}");
    }
    // A size the preset's patch does not divide is refused before anything is read.
    vitcore(args_with("bench loader --preset flowers --image-size 48", &[&data]))
        .fails_mentioning(&["patch size 25 must divide the image size 48x48"]);
}
