//! `--resume` in miniature: training interrupted after k steps, saved to a checkpoint (model +
//! optimiser state + scheduler state), restored into a fresh model and optimiser, and continued,
//! must take bit-for-bit the same steps as the uninterrupted run.

use std::path::PathBuf;
use vitcore::optim::{default_no_decay, Adam, AdamConfig, LrScheduler, Schedule};
use vitcore::{checkpoint, Graph, ParamId, ParamStore, Tensor};

fn model(init: f32) -> ParamStore {
    let mut p = ParamStore::new();
    let mut add = |name: &str, shape: &[usize], k: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| init * ((i as f32 + k) * 0.61).sin()).collect();
        p.add(name, Tensor::from_vec(v, shape).unwrap()).unwrap();
    };
    add("cls_token", &[1, 1, 4], 0.0);
    add("blocks.0.attn.qkv.weight", &[12, 4], 1.0);
    add("blocks.0.attn.qkv.bias", &[12], 2.0);
    add("blocks.0.norm1.weight", &[4], 3.0);
    add("head.weight", &[3, 4], 4.0);
    p
}

/// A gradient that depends on the current weights (so a wrong restore shows), set the way training
/// sets it: through a backward pass accumulated into the store. `head.weight` gets no gradient in
/// the first two steps, so its step count differs from the others'.
fn set_grads(params: &mut ParamStore, step: usize) {
    params.zero_grad();
    let ids: Vec<ParamId> = params.ids().collect();
    for id in ids {
        if params.name(id) == "head.weight" && step < 2 {
            continue;
        }
        let v = params.value(id);
        let g: Vec<f32> = v
            .data()
            .iter()
            .enumerate()
            .map(|(i, &x)| (x * 3.0 + step as f32).sin() + 0.1 * i as f32 - x)
            .collect();
        let mut graph = Graph::new();
        let x = graph.param(params, id);
        let seed = Tensor::from_vec(g, v.shape()).unwrap();
        let grads = graph.backward_with(x, seed).unwrap();
        params.accumulate_grads(&grads).unwrap();
    }
}

fn optimiser() -> Adam {
    let cfg = AdamConfig {
        lr: 0.05,
        weight_decay: 0.05,
        ..Default::default()
    };
    Adam::adamw(cfg).unwrap().with_no_decay(default_no_decay)
}

fn scheduler() -> LrScheduler {
    LrScheduler::new(
        0.05,
        Schedule::WarmupCosine {
            warmup_steps: 2,
            total_steps: 10,
            min_lr: 1e-4,
        },
    )
    .unwrap()
}

fn train(params: &mut ParamStore, opt: &mut Adam, sched: &LrScheduler, steps: std::ops::Range<usize>) {
    for s in steps {
        set_grads(params, s);
        vitcore::optim::clip_grad_norm(params, 2.0).unwrap();
        opt.set_lr(sched.lr(s));
        opt.step(params).unwrap();
    }
}

fn bits(params: &ParamStore) -> Vec<(String, Vec<u32>)> {
    params
        .ids()
        .map(|id| {
            let v = params.value(id).data().iter().map(|x| x.to_bits()).collect();
            (params.name(id).to_string(), v)
        })
        .collect()
}

fn state_bits(opt: &Adam, params: &ParamStore) -> Vec<(String, Vec<u32>)> {
    opt.state_tensors(params)
        .into_iter()
        .map(|(n, t)| (n, t.data().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn resumed_run_takes_identical_steps() {
    let dir: PathBuf = std::env::temp_dir().join(format!("vitcore-optim-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("last.safetensors");

    // Uninterrupted: 8 steps.
    let sched = scheduler();
    let mut full = model(1.0);
    let mut opt_full = optimiser();
    train(&mut full, &mut opt_full, &sched, 0..8);

    // Interrupted after 3 steps: checkpoint model + optimiser state + the step counter.
    let mut first = model(1.0);
    let mut opt_first = optimiser();
    train(&mut first, &mut opt_first, &sched, 0..3);
    let mut meta = opt_first.state_metadata(&first);
    meta.insert("step".into(), "3".into());
    meta.extend(sched.state_metadata());
    checkpoint::save_params(&path, &first, &opt_first.state_tensors(&first), &meta).unwrap();
    drop((first, opt_first));

    // Resume into a differently initialised model and a fresh optimiser.
    let mut resumed = model(-0.3);
    let mut opt_resumed = optimiser();
    let mut sched_resumed = scheduler();
    let meta = checkpoint::load_into(&path, &mut resumed).unwrap();
    assert_eq!(opt_resumed.load_state_file(&path, &resumed).unwrap(), 5);
    sched_resumed.load_state_metadata(&meta).unwrap();
    let head = resumed.id("head.weight").unwrap();
    let qkv = resumed.id("blocks.0.attn.qkv.weight").unwrap();
    assert_eq!((opt_resumed.steps(qkv), opt_resumed.steps(head)), (3, 1));
    let start: usize = meta["step"].parse().unwrap();
    train(&mut resumed, &mut opt_resumed, &sched_resumed, start..8);

    assert_eq!(bits(&resumed), bits(&full), "parameters after resume");
    assert_eq!(
        state_bits(&opt_resumed, &resumed),
        state_bits(&opt_full, &full),
        "moments"
    );
    for id in full.ids() {
        assert_eq!(opt_resumed.steps(id), opt_full.steps(id), "{}", full.name(id));
    }

    // Without restoring the optimiser state the run diverges: the test can tell the difference.
    let mut naive = model(-0.3);
    checkpoint::load_into(&path, &mut naive).unwrap();
    let mut opt_naive = optimiser();
    train(&mut naive, &mut opt_naive, &sched, start..8);
    assert_ne!(bits(&naive), bits(&full));

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn optimiser_state_of_another_model_is_rejected_with_the_path() {
    let dir: PathBuf = std::env::temp_dir().join(format!("vitcore-optim-reject-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other.safetensors");

    let mut small = ParamStore::new();
    small.add("head.weight", Tensor::ones(&[2, 4])).unwrap();
    let mut opt = optimiser();
    set_grads(&mut small, 5);
    opt.step(&mut small).unwrap();
    checkpoint::save(
        &path,
        &opt.state_tensors(&small)
            .iter()
            .map(|(n, t)| (n.clone(), t))
            .collect::<Vec<_>>(),
        &opt.state_metadata(&small),
    )
    .unwrap();

    let big = model(1.0); // head.weight is [3, 4] here
    let mut fresh = optimiser();
    let msg = fresh.load_state_file(&path, &big).unwrap_err().to_string();
    assert!(
        msg.contains("other.safetensors")
            && msg.contains("head.weight")
            && msg.contains("[3, 4]")
            && msg.contains("[2, 4]"),
        "{msg}"
    );
    assert_eq!(fresh.steps(big.id("head.weight").unwrap()), 0, "nothing restored");
    std::fs::remove_dir_all(&dir).unwrap();
}
