//! Bad input through the binary. Every case must fail cleanly: a non-zero exit status that is not
//! 101 (a Rust panic), no "panicked" on stderr, and a message naming the file (and the line, for
//! CSV) and what was wrong. Also: `--help` of every command.

mod cli_common;

use cli_common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Kaggle CSV text of the first `n` MNIST test images with line `line` (1-based; line 1 is the
/// header) passed through `edit` (which gets the line's fields).
fn csv_with_bad_line(n: usize, labelled: bool, line: usize, edit: impl Fn(&mut Vec<String>)) -> String {
    let text = kaggle_csv(&mnist().1, 0..n, labelled);
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<String> = lines[line - 1].split(',').map(String::from).collect();
    edit(&mut fields);
    lines[line - 1] = fields.join(",");
    lines.join("\n") + "\n"
}

/// `train csv` of `csv` into `tmp/run`: must fail cleanly and create no run folder.
fn train_csv_fails(tmp: &TempDir, csv: &Path, parts: &[&str]) {
    let out = tmp.join("run");
    let r = vitcore(args_with(
        &format!("train csv {TINY_MODEL} --epochs 1 --train"),
        &[csv, Path::new("--out"), &out],
    ));
    r.fails_mentioning(parts);
    assert!(!out.join("config.json").exists(), "a failed run left {}", out.display());
}

/// `predict RUN --input input` must fail cleanly, mentioning `parts`, and write no submission.
fn predict_fails(tmp: &TempDir, input: &Path, parts: &[&str]) {
    let out = tmp.join("sub.csv");
    let r = vitcore(args_with(
        "predict",
        &[tiny_run(), Path::new("--input"), input, Path::new("--out"), &out],
    ));
    r.fails_mentioning(parts);
    assert!(!out.exists(), "a failed predict wrote {}", out.display());
}

#[test]
fn csv_with_a_wrong_column_count() {
    let tmp = TempDir::new("csv-cols");
    // One column too many on line 4 of a train.csv (785 columns expected).
    let p = tmp.write("cols.csv", csv_with_bad_line(5, true, 4, |f| f.push("0".into())));
    train_csv_fails(
        &tmp,
        &p,
        &["cols.csv:4:", "wrong number of columns", "expected 785", "found 786"],
    );
    // One too few on line 3 of a test.csv (784 expected).
    let p = tmp.write("short.csv", csv_with_bad_line(5, false, 3, |f| drop(f.pop())));
    predict_fails(
        &tmp,
        &p,
        &["short.csv:3:", "wrong number of columns", "expected 784", "found 783"],
    );
    // And through eval --csv.
    let p = tmp.write("evalcols.csv", csv_with_bad_line(5, true, 6, |f| f.truncate(100)));
    vitcore(args_with("eval", &[tiny_run(), Path::new("--csv"), &p])).fails_mentioning(&[
        "evalcols.csv:6:",
        "expected 785",
        "found 100",
    ]);
}

#[test]
fn csv_with_a_non_numeric_pixel() {
    let tmp = TempDir::new("csv-nan");
    let p = tmp.write("nonnum.csv", csv_with_bad_line(5, true, 3, |f| f[100] = "abc".into()));
    train_csv_fails(&tmp, &p, &["nonnum.csv:3:", "'abc' is not an integer", "pixel99"]);
    let p = tmp.write("test.csv", csv_with_bad_line(5, false, 5, |f| f[0] = "1.5".into()));
    predict_fails(&tmp, &p, &["test.csv:5:", "'1.5' is not an integer", "pixel0"]);
    // A pixel outside 0..=255 is named too.
    let p = tmp.write("big.csv", csv_with_bad_line(5, false, 2, |f| f[783] = "256".into()));
    predict_fails(&tmp, &p, &["big.csv:2:", "pixel783", "256", "0..=255"]);
}

#[test]
fn csv_with_a_label_outside_0_to_9() {
    let tmp = TempDir::new("csv-label");
    let p = tmp.write("label.csv", csv_with_bad_line(5, true, 3, |f| f[0] = "12".into()));
    train_csv_fails(&tmp, &p, &["label.csv:3:", "label 12", "0..=9"]);
    let p = tmp.write("negative.csv", csv_with_bad_line(5, true, 6, |f| f[0] = "-1".into()));
    train_csv_fails(&tmp, &p, &["negative.csv:6:", "label -1"]);
    // predict reads labels of a train.csv too (and ignores them), but not invalid ones.
    let p = tmp.write("predict.csv", csv_with_bad_line(5, true, 2, |f| f[0] = "10".into()));
    predict_fails(&tmp, &p, &["predict.csv:2:", "label 10"]);
}

#[test]
fn csv_that_is_empty_or_has_no_rows_or_no_header() {
    let tmp = TempDir::new("csv-empty");
    let p = tmp.write("empty.csv", "");
    train_csv_fails(&tmp, &p, &["empty.csv", "empty"]);
    predict_fails(&tmp, &p, &["empty.csv", "empty"]);
    let header_only = kaggle_csv(&mnist().1, 0..0, true);
    let p = tmp.write("header.csv", header_only);
    train_csv_fails(&tmp, &p, &["header.csv", "no data rows"]);
    let no_header: String = kaggle_csv(&mnist().1, 0..3, true)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let p = tmp.write("noheader.csv", no_header);
    train_csv_fails(&tmp, &p, &["noheader.csv:1:", "missing header"]);
    // A test.csv (no label column) is not training data.
    let p = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..3, false));
    train_csv_fails(&tmp, &p, &["test.csv", "no `label` column"]);
}

/// A folder of small, valid, raw MNIST IDX files (200 training, 100 test images).
fn small_mnist(tmp: &TempDir, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    write_small_mnist(&dir, 200, 100);
    dir
}

fn train_mnist_from(dir: &Path, out: &Path) -> Run {
    vitcore(args_with(
        &format!("train mnist {TINY_MODEL} --epochs 1 --data"),
        &[dir, Path::new("--out"), out],
    ))
}

#[test]
fn small_valid_mnist_folder_trains_and_evaluates() {
    // The control for the IDX tests below: their folders differ from this one by one file.
    let tmp = TempDir::new("idx-ok");
    let dir = small_mnist(&tmp, "mnist");
    let out = tmp.join("run");
    let r = train_mnist_from(&dir, &out).ok();
    assert!(r.stdout.contains("on 180 images, validating on 20"), "{}", r.stdout);
    let r = vitcore(args_with("eval --data", &[&dir, tiny_run()])).ok();
    assert!(
        r.stdout.contains("/100)"),
        "eval on the folder's 100 test images:\n{}",
        r.stdout
    );
}

#[test]
fn idx_with_a_corrupt_magic_number() {
    let tmp = TempDir::new("idx-magic");
    let dir = small_mnist(&tmp, "mnist");
    let f = dir.join("train-images-idx3-ubyte");
    let mut bytes = fs::read(&f).unwrap();
    bytes[3] = 0x04;
    fs::write(&f, bytes).unwrap();
    let out = tmp.join("run");
    train_mnist_from(&dir, &out).fails_mentioning(&[
        "train-images-idx3-ubyte",
        "magic",
        "expected 0x00000803",
        "found 0x00000804",
    ]);
    assert!(!out.exists());

    // eval --data: the test labels' magic.
    let dir = small_mnist(&tmp, "mnist2");
    let f = dir.join("t10k-labels-idx1-ubyte");
    let mut bytes = fs::read(&f).unwrap();
    bytes[0] = 0xff;
    fs::write(&f, bytes).unwrap();
    vitcore(args_with("eval --data", &[&dir, tiny_run()])).fails_mentioning(&[
        "t10k-labels-idx1-ubyte",
        "magic",
        "expected 0x00000801",
        "found 0xff000801",
    ]);
}

#[test]
fn idx_with_a_truncated_gzip_or_truncated_data() {
    let tmp = TempDir::new("idx-gzip");
    let dir = small_mnist(&tmp, "mnist");
    let raw = dir.join("train-images-idx3-ubyte");
    let gz = gzip(&fs::read(&raw).unwrap());
    fs::remove_file(&raw).unwrap();
    fs::write(dir.join("train-images-idx3-ubyte.gz"), &gz[..gz.len() / 2]).unwrap();
    train_mnist_from(&dir, &tmp.join("run")).fails_mentioning(&["train-images-idx3-ubyte.gz", "gzip", "truncated"]);

    let dir = small_mnist(&tmp, "mnist2");
    let raw = dir.join("t10k-images-idx3-ubyte");
    let gz = gzip(&fs::read(&raw).unwrap());
    fs::remove_file(&raw).unwrap();
    fs::write(dir.join("t10k-images-idx3-ubyte.gz"), &gz[..gz.len() - 6]).unwrap();
    vitcore(args_with("eval --data", &[&dir, tiny_run()])).fails_mentioning(&["t10k-images-idx3-ubyte.gz", "gzip"]);

    // Raw data cut short: the header promises 200 images.
    let dir = small_mnist(&tmp, "mnist3");
    let f = dir.join("train-images-idx3-ubyte");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    train_mnist_from(&dir, &tmp.join("run")).fails_mentioning(&[
        "train-images-idx3-ubyte",
        "truncated",
        "200 images of 28x28",
    ]);
}

#[test]
fn idx_file_that_is_empty_or_missing() {
    let tmp = TempDir::new("idx-empty");
    let dir = small_mnist(&tmp, "mnist");
    fs::write(dir.join("train-labels-idx1-ubyte"), b"").unwrap();
    train_mnist_from(&dir, &tmp.join("run")).fails_mentioning(&["train-labels-idx1-ubyte", "empty"]);

    let dir = small_mnist(&tmp, "mnist2");
    fs::write(dir.join("t10k-images-idx3-ubyte"), b"").unwrap();
    vitcore(args_with("eval --data", &[&dir, tiny_run()])).fails_mentioning(&["t10k-images-idx3-ubyte", "empty"]);

    let dir = small_mnist(&tmp, "mnist3");
    fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    train_mnist_from(&dir, &tmp.join("run")).fails_mentioning(&["missing MNIST file", "t10k-labels-idx1-ubyte"]);

    let nowhere = tmp.join("no-such-dir");
    let shown = nowhere.display().to_string();
    train_mnist_from(&nowhere, &tmp.join("run")).fails_mentioning(&[&shown, "does not exist"]);
}

#[test]
fn png_of_another_size_or_not_an_image() {
    let tmp = TempDir::new("png");
    let big = tmp.join("big.png");
    vitcore::data::image::save_png_gray(&big, &[0u8; 32 * 28], 32, 28).unwrap();
    predict_fails(&tmp, &big, &["big.png", "32x28", "28x28"]);
    let garbage = tmp.write("garbage.png", b"this is not a PNG file at all");
    predict_fails(&tmp, &garbage, &["garbage.png", "decode"]);
    let missing = tmp.join("missing.png");
    predict_fails(&tmp, &missing, &["missing.png"]);
}

#[test]
fn csv_images_of_another_size_than_the_model() {
    // 4x4 images (16 pixel columns) against a 28x28 model.
    let tmp = TempDir::new("csv-size");
    let header = (0..16).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(",");
    let row = vec!["0"; 16].join(",");
    let p = tmp.write("small.csv", format!("{header}\n{row}\n{row}\n"));
    predict_fails(&tmp, &p, &["small.csv", "[1, 4, 4]", "[1, 28, 28]"]);
    let p = tmp.write("small-labelled.csv", format!("label,{header}\n3,{row}\n"));
    vitcore(args_with("eval", &[tiny_run(), Path::new("--csv"), &p])).fails_mentioning(&[
        "small-labelled.csv",
        "[1, 4, 4]",
        "[1, 28, 28]",
    ]);
}

#[test]

fn train_csv_of_another_image_size_names_the_file() {
    let tmp = TempDir::new("train-csv-size");
    let header = (0..16).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(",");
    let rows: String = (0..20)
        .map(|i| format!("{},{}\n", i % 10, vec!["7"; 16].join(",")))
        .collect();
    let p = tmp.write("small.csv", format!("label,{header}\n{rows}"));
    train_csv_fails(&tmp, &p, &["small.csv", "[1, 4, 4]", "[1, 28, 28]"]);
}

#[test]
fn missing_run_folder_or_checkpoint() {
    let tmp = TempDir::new("no-run");
    let nowhere = tmp.join("no-such-run");
    let shown = nowhere.display().to_string();
    vitcore(args_with("eval", &[&nowhere])).fails_mentioning(&[&shown, "no such run folder"]);
    let png = tmp.join("digit.png");
    vitcore::data::image::save_png_gray(&png, &[0u8; 784], 28, 28).unwrap();
    vitcore(args_with("predict", &[&nowhere, Path::new("--input"), &png]))
        .fails_mentioning(&[&shown, "no such run folder"]);
    // --resume of a folder that holds no run.
    fs::create_dir_all(&nowhere).unwrap();
    vitcore(args_with("train mnist --quiet --resume", &[&nowhere])).fails_mentioning(&[&shown, "config.json"]);

    // A run folder without its checkpoint.
    let run = tmp.join("run");
    copy_run(tiny_run(), &run);
    fs::remove_file(run.join("best.safetensors")).unwrap();
    vitcore(args_with("eval", &[&run])).fails_mentioning(&["best.safetensors", "not found"]);
    vitcore(args_with("eval --checkpoint bogus", &[tiny_run()])).fails_mentioning(&["bogus.safetensors", "not found"]);
}

#[test]
fn checkpoint_of_another_shape_names_the_checkpoint_the_parameter_and_both_shapes() {
    let tmp = TempDir::new("shape");
    let run = tmp.join("run");
    copy_run(tiny_run(), &run);
    let cfg_path = run.join("config.json");
    let mut cfg = read_json(&cfg_path);
    assert_eq!(cfg["model"]["embed_dim"], 16, "the tiny run's width");
    cfg["model"]["embed_dim"] = 8.into();
    fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let ckpt = run.join("best.safetensors").display().to_string();
    let parts = [
        ckpt.as_str(),
        "does not match the model",
        "`pos_embed`",
        "[1, 16, 8]",
        "[1, 16, 16]",
        "`head.weight`",
        "[10, 8]",
        "[10, 16]",
    ];
    vitcore(args_with("eval", &[&run])).fails_mentioning(&parts);
    let png = tmp.join("digit.png");
    vitcore::data::image::save_png_gray(&png, &[0u8; 784], 28, 28).unwrap();
    vitcore(args_with("predict", &[&run, Path::new("--input"), &png])).fails_mentioning(&parts);
}

#[test]
fn corrupt_checkpoint_or_config() {
    let tmp = TempDir::new("corrupt");
    let run = tmp.join("run");
    copy_run(tiny_run(), &run);
    let ckpt = run.join("best.safetensors");
    let bytes = fs::read(&ckpt).unwrap();
    fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    vitcore(args_with("eval", &[&run])).fails_mentioning(&["best.safetensors", "not a valid safetensors file"]);

    let run2 = tmp.join("run2");
    copy_run(tiny_run(), &run2);
    fs::write(run2.join("config.json"), "{ \"preset\": \"default\", ").unwrap();
    vitcore(args_with("eval", &[&run2])).fails_mentioning(&["config.json", "not a vitcore config"]);
}

#[test]
fn predict_into_a_missing_folder_names_the_path() {
    let tmp = TempDir::new("predict-out");
    let input = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..3, false));
    let out = tmp.join("no").join("such").join("sub.csv");
    let r = vitcore(args_with(
        "predict",
        &[tiny_run(), Path::new("--input"), &input, Path::new("--out"), &out],
    ));
    r.fails_mentioning(&["sub.csv"]);
}

#[test]
fn invalid_settings_are_refused_before_training() {
    let tmp = TempDir::new("settings");
    let out = tmp.join("run");
    for (flags, says) in [
        ("--epochs 0", "--epochs must be at least 1"),
        ("--lr=-1", "--lr must be a positive number"),
        ("--val-fraction 1.5", "--val-fraction"),
        ("--dropout 1.5", "dropout"),
    ] {
        let r = vitcore(args_with(
            &format!("train mnist {TINY_MODEL} --train-limit 100 {flags} --out"),
            &[&out],
        ));
        r.fails_mentioning(&[says]);
        assert!(!out.exists(), "{flags}: a refused run left {}", out.display());
    }
}

#[test]

fn train_limit_zero_is_refused() {
    let tmp = TempDir::new("limit0");
    let out = tmp.join("run");
    let r = vitcore(args_with(
        &format!("train mnist {TINY_MODEL} --train-limit 0 --test-limit 100 --epochs 1 --out"),
        &[&out],
    ));
    r.fails_mentioning(&["train-limit"]);
}

#[test]
fn usage_errors_exit_2_without_panicking() {
    for (args, says) in [
        ("frobnicate", "frobnicate"),
        ("train mnist --no-such-flag", "--no-such-flag"),
        ("train mnist --epochs abc", "--epochs"),
        ("train mnist --optimizer sgd", "sgd"),
        ("train csv --epochs 1", "--train"),
        ("predict runs/x", "--input"),
        ("eval", "<RUN>"),
    ] {
        let r = vitcore(words(args));
        r.fails_mentioning(&[says]);
        assert_eq!(r.code, Some(2), "`vitcore {args}`: usage errors exit 2\n{}", r.stderr);
        assert!(
            r.stderr.contains("--help"),
            "`vitcore {args}` points to --help:\n{}",
            r.stderr
        );
    }
}

/// `vitcore ARGS --help`: exit 0, stdout names every one of `flags`.
fn help_mentions(args: &str, flags: &[&str]) -> String {
    let r = vitcore(words(&format!("{args} --help"))).ok();
    assert!(
        r.stdout.contains("Usage: vitcore"),
        "`vitcore {args} --help`:\n{}",
        r.stdout
    );
    for f in flags {
        assert!(r.stdout.contains(f), "`vitcore {args} --help` lacks {f}:\n{}", r.stdout);
    }
    r.stdout
}

/// The train flags every training command has.
const TRAIN_FLAGS: [&str; 14] = [
    "--preset",
    "--out",
    "--resume",
    "--epochs",
    "--batch-size",
    "--lr",
    "--seed",
    "--optimizer",
    "--schedule",
    "--patch",
    "--embed-dim",
    "--train-limit",
    "--test-limit",
    "--quiet",
];

#[test]
fn help_of_every_command_exits_0_and_lists_its_flags() {
    let top = help_mentions("", &["train", "eval", "predict"]);
    assert!(top.contains("Commands:"), "{top}");
    help_mentions("train", &["mnist", "csv"]);
    help_mentions("train mnist", &[&TRAIN_FLAGS[..], &["--data", "data/mnist"]].concat());
    help_mentions("train csv", &[&TRAIN_FLAGS[..], &["--train"]].concat());
    help_mentions(
        "eval",
        &["<RUN>", "--data", "--csv", "--checkpoint", "confusion matrix"],
    );
    help_mentions(
        "predict",
        &["<RUN>", "--input", "--out", "--checkpoint", "ImageId,Label"],
    );
    let v = vitcore(["--version"]).ok();
    assert!(v.stdout.starts_with("vitcore "), "{}", v.stdout);
}

/// The options of a long `--help` text whose description is empty (only a default or a list of
/// possible values, or nothing at all).
fn undescribed_options(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    let flush = |c: Option<(String, String)>, out: &mut Vec<String>| {
        if let Some((flag, text)) = c {
            let mut t = text;
            for marker in ["[default:", "[possible values:"] {
                if let Some(i) = t.find(marker) {
                    t.truncate(i);
                }
            }
            if t.trim().is_empty() {
                out.push(flag);
            }
        }
    };
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (2..=6).contains(&indent) && trimmed.starts_with('-') {
            flush(current.take(), &mut out);
            let flag = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or(trimmed)
                .to_string();
            // Short help puts the description on the flag's own line, after two spaces.
            let same_line = trimmed
                .split_once("  ")
                .map(|(_, d)| d.trim().to_string())
                .unwrap_or_default();
            current = Some((flag.trim_end_matches(',').to_string(), same_line));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(trimmed);
            text.push('\n');
        }
    }
    flush(current, &mut out);
    out
}

#[test]

fn help_describes_every_flag() {
    for args in ["train mnist", "train csv", "eval", "predict"] {
        let r = vitcore(words(&format!("{args} --help"))).ok();
        let missing = undescribed_options(&r.stdout);
        assert!(
            missing.is_empty(),
            "`vitcore {args} --help` does not describe {missing:?}"
        );
    }
}

#[test]
fn undescribed_options_finds_empty_descriptions() {
    // The checker of the test above, on a known text (so its failure is the CLI's, not its own).
    let help = "Options:\n      --data <DATA>\n          [default: data/mnist]\n\n      --out <OUT>\n          Run folder\n\n      --epochs <EPOCHS>\n          \n\n  -h, --help\n          Print help\n";
    assert_eq!(undescribed_options(help), ["--data", "--epochs"]);
}

#[test]

fn a_run_refused_for_an_invalid_flag_can_be_rerun_with_the_same_out() {
    let tmp = TempDir::new("rerun");
    for bad in ["--clip-norm=-1", "--clip-value=-1", "--shift=-3", "--rotate=-10"] {
        let out = tmp.join(bad.trim_start_matches('-').replace('=', ""));
        let flags = format!("train mnist {TINY_MODEL} --train-limit 300 --test-limit 50 --epochs 1");
        vitcore(args_with(&format!("{flags} {bad} --out"), &[&out])).fails_mentioning(&[bad
            .trim_start_matches('-')
            .split(['=', '-'])
            .next()
            .unwrap()]);
        // The user fixes the flag and runs the same command again.
        vitcore(args_with(&format!("{flags} --out"), &[&out])).ok();
    }
}

#[test]
fn device_cuda_without_a_gpu_is_a_clear_error_and_auto_says_why_it_uses_the_cpu() {
    if vitcore::backend::cuda::cuda_available().is_ok() {
        println!("skipped: a GPU is present (tests/cuda_graph.rs covers it)");
        return;
    }
    let tmp = TempDir::new("device");
    let train = |device: &str, out: &Path| {
        vitcore(args_with(
            &format!("train mnist {TINY_MODEL} --train-limit 100 --test-limit 50 --epochs 1 --device {device} --out"),
            &[out],
        ))
    };
    let out = tmp.join("cuda-run");
    train("cuda", &out).fails_mentioning(&["--device cuda"]);
    assert!(!out.exists(), "a refused run leaves no folder");
    for cmd in ["eval", "predict --input data/none.png"] {
        vitcore(args_with(&format!("{cmd} --device cuda"), &[tiny_run()])).fails_mentioning(&["--device cuda"]);
    }
    // auto: the CPU, with one line on stderr saying why (stdout stays the command's output).
    let r = train("auto", &tmp.join("auto-run")).ok();
    let why: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("device: cpu (no usable GPU: "))
        .collect();
    assert_eq!(why.len(), 1, "one line saying why the CPU is used:\n{}", r.stderr);
    let r = train("cpu", &tmp.join("cpu-run")).ok();
    assert!(r.stderr.lines().any(|l| l == "device: cpu"), "{}", r.stderr);
    vitcore(words("train mnist --device tpu")).fails_mentioning(&["tpu"]);
}
