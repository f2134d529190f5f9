//! `vitcore eval`, `vitcore predict` and `vitcore train csv`, through the binary, on one small run
//! trained once for this file (about 3 s, about 75% MNIST test accuracy). The paths are checked
//! against each other: `eval --csv` of the first 500 test images must count exactly what training
//! reported on them, `predict` must predict those counts, a PNG must get the class its CSV row got,
//! and `train csv` on the CSV of the same images must repeat the MNIST run exactly.

mod cli_common;

use cli_common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The run trained for this file: 8000 MNIST training images, 2 epochs, first 500 test images.
const FIXTURE_FLAGS: &str = "--train-limit 8000 --test-limit 500 --epochs 2 --batch-size 64 --lr 3e-3 \
    --patch 7 --embed-dim 64 --depth 2 --heads 4 --mlp-dim 128 --rotate 0 --shift 0 \
    --warmup-epochs 0.3 --label-smoothing 0 --quiet";
const N_TEST: usize = 500;

/// Train the shared run once (in cargo's per-target temp folder, named by pid).
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = shared_dir("cli_eval_predict-run");
        vitcore(args_with(&format!("train mnist {FIXTURE_FLAGS} --out"), &[&dir])).ok();
        dir
    })
}

/// `(correct, total, confusion)` that training wrote to test_metrics.json (first 500 test images).
fn train_metrics(run: &Path) -> (usize, usize, Vec<Vec<usize>>) {
    let m = read_json(&run.join("test_metrics.json"));
    assert_eq!(m["evaluated_on"], "test");
    let r = &m["result"];
    (
        r["correct"].as_u64().unwrap() as usize,
        r["total"].as_u64().unwrap() as usize,
        serde_json::from_value(r["confusion"].clone()).unwrap(),
    )
}

/// From `... accuracy 75.59% (7559/10000), loss 0.7834`: (accuracy %, correct, total).
fn parse_accuracy_line(stdout: &str) -> (f64, usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains("accuracy"))
        .unwrap_or_else(|| panic!("no accuracy line in:\n{stdout}"));
    let after = &line[line.find("accuracy ").unwrap() + "accuracy ".len()..];
    let pct: f64 = after[..after.find('%').unwrap()].parse().unwrap();
    let inner = &after[after.find('(').unwrap() + 1..after.find(')').unwrap()];
    let (c, t) = inner.split_once('/').unwrap();
    (pct, c.parse().unwrap(), t.parse().unwrap())
}

/// The 10x10 confusion table printed after the `confusion matrix` line.
fn parse_confusion(stdout: &str) -> Vec<Vec<usize>> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("confusion matrix"));
    assert!(lines.next().is_some(), "no confusion matrix in:\n{stdout}");
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["true\\pred", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    (0..10)
        .map(|t| {
            let row: Vec<usize> = lines
                .next()
                .unwrap_or_else(|| panic!("confusion matrix cut short:\n{stdout}"))
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(row.len(), 11, "row {t}");
            assert_eq!(row[0], t, "rows are labelled by the true class");
            row[1..].to_vec()
        })
        .collect()
}

#[test]
fn eval_prints_accuracy_and_a_confusion_matrix_of_the_mnist_test_set() {
    let run = trained_run();
    let r = vitcore(args_with("eval", &[run])).ok();
    let (pct, correct, total) = parse_accuracy_line(&r.stdout);
    assert!(r.stdout.contains("MNIST test set"), "{}", r.stdout);
    assert_eq!(total, 10_000, "eval uses the whole MNIST test set");
    assert!(
        (pct - 100.0 * correct as f64 / total as f64).abs() < 0.006,
        "{}",
        r.stdout
    );
    assert!(pct > 60.0, "the fixture run reaches about 75%:\n{}", r.stdout);

    // Rows are the true classes: each sums to that class's count in the test set.
    let conf = parse_confusion(&r.stdout);
    let mut class_counts = [0usize; 10];
    for i in 0..mnist().1.len() {
        class_counts[mnist().1.label(i).unwrap() as usize] += 1;
    }
    for (t, row) in conf.iter().enumerate() {
        assert_eq!(row.iter().sum::<usize>(), class_counts[t], "row {t}:\n{}", r.stdout);
    }
    assert_eq!((0..10).map(|i| conf[i][i]).sum::<usize>(), correct);

    // The default --data is data/mnist: naming it gives the same numbers.
    let r2 = vitcore(args_with("eval --data", &[&mnist_dir(), run])).ok();
    assert_eq!(parse_accuracy_line(&r2.stdout), (pct, correct, total));
    // Evaluation needs only the test files: a folder holding just the t10k pair is enough.
    let only_test = TempDir::new("eval-only-t10k");
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        fs::copy(mnist_dir().join(name), only_test.join(name)).unwrap();
    }
    let r_test = vitcore(args_with("eval --data", &[only_test.path(), run])).ok();
    assert_eq!(parse_accuracy_line(&r_test.stdout), (pct, correct, total));
    // --checkpoint last works too.
    let r3 = vitcore(args_with("eval --checkpoint last", &[run])).ok();
    assert_eq!(parse_accuracy_line(&r3.stdout).2, 10_000);
}

#[test]
fn eval_csv_counts_what_training_counted_on_the_same_images() {
    let run = trained_run();
    let tmp = TempDir::new("eval-csv");
    let csv = tmp.write("labelled.csv", kaggle_csv(&mnist().1, 0..N_TEST, true));
    let r = vitcore(args_with("eval", &[run, Path::new("--csv"), &csv])).ok();
    assert!(
        r.stdout.contains("labelled.csv"),
        "eval names what it evaluated on:\n{}",
        r.stdout
    );
    let (_, correct, total) = parse_accuracy_line(&r.stdout);
    let (want_correct, want_total, want_conf) = train_metrics(run);
    assert_eq!((correct, total), (want_correct, want_total), "{}", r.stdout);
    assert_eq!(parse_confusion(&r.stdout), want_conf);

    // An unlabelled CSV has nothing to evaluate against: a clean error naming it.
    let unlabelled = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..5, false));
    vitcore(args_with("eval", &[run, Path::new("--csv"), &unlabelled])).fails_mentioning(&["test.csv", "no labels"]);
}

/// Read and check a submission: header `ImageId,Label`, ids 1..=n in order, labels 0..=9.
fn read_submission(path: &Path, n: usize) -> Vec<u8> {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ImageId,Label"));
    let labels: Vec<u8> = lines
        .enumerate()
        .map(|(i, l)| {
            let (id, label) = l.split_once(',').unwrap_or_else(|| panic!("bad row {l:?}"));
            assert_eq!(id, (i + 1).to_string(), "ImageId of row {}", i + 1);
            let label: u8 = label.parse().unwrap_or_else(|_| panic!("bad label in {l:?}"));
            assert!(label <= 9, "label {label} in {l:?}");
            label
        })
        .collect();
    assert_eq!(labels.len(), n, "one row per image");
    labels
}

#[test]
fn predict_csv_writes_a_submission_with_one_row_per_image() {
    let run = trained_run();
    let tmp = TempDir::new("predict-csv");
    let test = &mnist().1;
    let input = tmp.write("test.csv", kaggle_csv(test, 0..N_TEST, false));
    let out = tmp.join("sub.csv");
    let r = vitcore(args_with(
        "predict",
        &[run, Path::new("--input"), &input, Path::new("--out"), &out],
    ))
    .ok();
    assert!(
        r.stdout
            .contains(&format!("wrote {N_TEST} predictions to {}", out.display())),
        "{}",
        r.stdout
    );
    let labels = read_submission(&out, N_TEST);
    // The predictions are the ones training scored on these images.
    let correct = (0..N_TEST).filter(|&i| labels[i] == test.label(i).unwrap()).count();
    assert_eq!(
        correct,
        train_metrics(run).0,
        "predict disagrees with the run's test_metrics.json"
    );
    assert!(
        labels.iter().collect::<std::collections::HashSet<_>>().len() >= 8,
        "{labels:?}"
    );
    // Nothing else (no temporary file) is left next to the submission.
    let mut files: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["sub.csv", "test.csv"]);

    // A labelled train.csv as input: the labels are ignored, the predictions are the same.
    let labelled = tmp.write("train.csv", kaggle_csv(test, 0..N_TEST, true));
    let out2 = tmp.join("sub2.csv");
    vitcore(args_with(
        "predict",
        &[run, Path::new("--input"), &labelled, Path::new("--out"), &out2],
    ))
    .ok();
    assert_eq!(read_submission(&out2, N_TEST), labels);
}

/// From `predict` of one image: (class, the 10 printed probabilities in %).
fn parse_png_prediction(stdout: &str, png: &Path) -> (usize, Vec<f64>) {
    let first = stdout.lines().next().unwrap_or("");
    let prefix = format!("{}: class ", png.display());
    assert!(first.starts_with(&prefix), "expected `{prefix}N`, got:\n{stdout}");
    let class: usize = first[prefix.len()..].trim().parse().unwrap();
    let probs: Vec<f64> = stdout
        .lines()
        .skip(1)
        .enumerate()
        .map(|(c, l)| {
            let (k, p) = l.trim().split_once(':').unwrap_or_else(|| panic!("bad line {l:?}"));
            assert_eq!(k, c.to_string(), "probability lines are in class order");
            p.trim().trim_end_matches('%').trim().parse().unwrap()
        })
        .collect();
    (class, probs)
}

#[test]
fn predict_png_prints_the_class_and_ten_probabilities() {
    let run = trained_run();
    let tmp = TempDir::new("predict-png");
    let test = &mnist().1;
    const N: usize = 8;
    let input = tmp.write("test.csv", kaggle_csv(test, 0..N, false));
    let sub = tmp.join("sub.csv");
    vitcore(args_with(
        "predict",
        &[run, Path::new("--input"), &input, Path::new("--out"), &sub],
    ))
    .ok();
    let csv_labels = read_submission(&sub, N);

    for (i, &csv_label) in csv_labels.iter().enumerate() {
        let png = tmp.join(format!("digit{i}.png"));
        vitcore::data::image::save_png_gray(&png, test.image(i), 28, 28).unwrap();
        let r = vitcore(args_with("predict", &[run, Path::new("--input"), &png])).ok();
        let (class, probs) = parse_png_prediction(&r.stdout, &png);
        assert_eq!(probs.len(), 10, "{}", r.stdout);
        assert!(probs.iter().all(|p| (0.0..=100.0).contains(p)), "{}", r.stdout);
        let sum: f64 = probs.iter().sum();
        assert!((sum - 100.0).abs() < 0.1, "probabilities sum to {sum}%:\n{}", r.stdout);
        let argmax = (0..10).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap();
        assert!(
            probs[class] >= probs[argmax] - 1e-9,
            "the class is not the most probable:\n{}",
            r.stdout
        );
        assert_eq!(class, csv_label as usize, "image {i}: the PNG and its CSV row disagree");
        // Writes no submission for an image.
        assert!(!tmp.join("submission.csv").exists() && !repo_root().join("submission.csv").exists());
    }

    // An RGB PNG with equal channels is the same image once converted to grayscale.
    let rgb = image::RgbImage::from_fn(28, 28, |x, y| {
        let p = test.image(0)[(y * 28 + x) as usize];
        image::Rgb([p, p, p])
    });
    let png = tmp.join("rgb.png");
    rgb.save(&png).unwrap();
    let r = vitcore(args_with("predict", &[run, Path::new("--input"), &png])).ok();
    assert_eq!(parse_png_prediction(&r.stdout, &png).0, csv_labels[0] as usize);
}

#[test]
fn train_csv_on_a_kaggle_csv_reports_validation_accuracy_and_repeats_the_mnist_run() {
    let run = trained_run();
    let tmp = TempDir::new("train-csv");
    // Kaggle's train.csv layout, made of the same 8000 MNIST images the fixture trained on.
    let csv = tmp.write("train.csv", kaggle_csv(&mnist().0, 0..8000, true));
    let out = tmp.join("run");
    let r = vitcore(args_with(
        &format!("train csv {FIXTURE_FLAGS} --train"),
        &[&csv, Path::new("--out"), &out],
    ))
    .ok();
    assert!(r.stdout.contains("validating on 800"), "{}", r.stdout);
    assert!(
        r.stdout.contains("validation accuracy"),
        "a CSV run reports validation accuracy:\n{}",
        r.stdout
    );
    let m = read_json(&out.join("test_metrics.json"));
    assert_eq!(m["evaluated_on"], "validation");
    assert_eq!(m["result"]["total"], 800);
    let acc = m["result"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "validation accuracy {acc}");
    assert!(
        r.stdout.contains(&format!("{:.2}%", 100.0 * acc)),
        "stdout and test_metrics.json disagree:\n{}",
        r.stdout
    );
    let data = read_json(&out.join("data.json"));
    assert!(data["csv"]["train"].as_str().unwrap().ends_with("train.csv"), "{data}");

    // The same pixels, labels, split, seed and flags as the MNIST fixture: the same training.
    assert_eq!(
        log_rows_without_seconds(&out),
        log_rows_without_seconds(run),
        "training on the CSV of the same images differs from training on the IDX files"
    );
    assert_eq!(
        fs::read(out.join("best.safetensors")).unwrap(),
        fs::read(run.join("best.safetensors")).unwrap()
    );
}
