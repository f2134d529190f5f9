//! The user's inputs and intent survive, through the binary: an image means what a person sees,
//! non-finite numbers never pass silently, no command writes over one of its inputs, a closed
//! pipe ends a command quietly (and never a training run), and messages help.

mod cli_common;

use cli_common::*;
use image::{DynamicImage, GrayAlphaImage, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use vitcore::Tensor;

fn predict_png(png: &Path, extra: &str) -> Run {
    vitcore(args_with(&format!("predict {extra} --input"), &[png, tiny_run()]))
}

/// The prediction lines of `predict` of one image, without the first (which names the file).
fn probabilities(r: &Run) -> Vec<String> {
    r.stdout.lines().skip(1).map(String::from).collect()
}

/// The lines vitcore wrote on stderr about the image (not the `device:` line).
fn image_notes(r: &Run) -> Vec<&str> {
    r.stderr.lines().filter(|l| !l.starts_with("device:")).collect()
}

// ---- 2. An image means what a person sees ----

#[test]
fn every_way_of_drawing_the_same_digit_predicts_the_same() {
    let tmp = TempDir::new("png-forms");
    let digit = mnist().1.image(0).to_vec(); // a 7, light on dark as MNIST holds it
    let at = |x: u32, y: u32| digit[(y * 28 + x) as usize];
    let plain = tmp.join("plain.png");
    vitcore::data::image::save_png_gray(&plain, &digit, 28, 28).unwrap();
    let base = predict_png(&plain, "").ok();
    assert!(
        image_notes(&base).is_empty(),
        "MNIST's own form needs no change:\n{}",
        base.stderr
    );
    assert_eq!(probabilities(&base).len(), 10);

    let forms: Vec<(&str, DynamicImage, &str)> = vec![
        (
            "inverted.png",
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(28, 28, |x, y| Luma([255 - at(x, y)]))),
            "inverted it",
        ),
        (
            "canvas.png", // an HTML canvas export: RGB 0, the stroke only in alpha
            DynamicImage::ImageRgba8(RgbaImage::from_fn(28, 28, |x, y| Rgba([0, 0, 0, at(x, y)]))),
            "alpha channel",
        ),
        (
            "blue-ink.png",
            DynamicImage::ImageRgba8(RgbaImage::from_fn(28, 28, |x, y| Rgba([20, 60, 230, at(x, y)]))),
            "alpha channel",
        ),
        (
            "gray-alpha.png",
            DynamicImage::ImageLumaA8(GrayAlphaImage::from_fn(28, 28, |x, y| LumaA([0, at(x, y)]))),
            "alpha channel",
        ),
        (
            "scan16.png", // a 16-bit RGB scan: dark ink on white paper
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(28, 28, |x, y| {
                Rgb([65535 - at(x, y) as u16 * 257; 3])
            })),
            "16-bit colour to 8-bit gray; inverted it",
        ),
        (
            "gray16.png",
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(28, 28, |x, y| Luma([at(x, y) as u16 * 257]))),
            "16-bit gray to 8-bit",
        ),
        (
            "paper.png", // white paper, dark ink, a transparent 2-pixel margin (where no ink is)
            DynamicImage::ImageRgba8(RgbaImage::from_fn(28, 28, |x, y| {
                let v = 255 - at(x, y);
                let margin = (x < 2 || y < 2 || x > 25 || y > 25) && v == 255;
                Rgba([v, v, v, if margin { 0 } else { 255 }])
            })),
            "flattened its transparent parts onto the colour of its opaque part",
        ),
    ];
    for (name, img, says) in forms {
        let path = tmp.join(name);
        img.save(&path).unwrap();
        let r = predict_png(&path, "").ok();
        assert_eq!(probabilities(&r), probabilities(&base), "{name}:\n{}", r.describe());
        let notes = image_notes(&r);
        assert_eq!(notes.len(), 1, "{name}: one line on stderr:\n{}", r.stderr);
        assert!(
            notes[0].starts_with(&format!("{}: ", path.display())) && notes[0].contains(says),
            "{name}: expected {says:?} in {:?}",
            notes[0]
        );
    }

    // --no-auto-invert keeps the dark-on-light image as it is (so the model sees something else),
    // and says that it looks inverted.
    let r = predict_png(&tmp.join("inverted.png"), "--no-auto-invert").ok();
    assert_ne!(probabilities(&r), probabilities(&base));
    assert!(r.stderr.contains("kept it as it is (--no-auto-invert)"), "{}", r.stderr);
}

#[test]
fn a_blank_image_is_an_error_not_a_prediction() {
    let tmp = TempDir::new("png-blank");
    let black = tmp.join("black.png");
    vitcore::data::image::save_png_gray(&black, &[0u8; 784], 28, 28).unwrap();
    let clear = tmp.join("clear.png"); // fully transparent
    DynamicImage::ImageRgba8(RgbaImage::from_pixel(28, 28, Rgba([0, 0, 0, 0])))
        .save(&clear)
        .unwrap();
    let white = tmp.join("white.png");
    vitcore::data::image::save_png_gray(&white, &[250u8; 784], 28, 28).unwrap();
    for png in [&black, &clear, &white] {
        let r = predict_png(png, "");
        r.fails_mentioning(&[png.file_name().unwrap().to_str().unwrap(), "blank"]);
        assert!(!r.stdout.contains("class"), "{}", r.stdout);
    }
}

#[test]
fn predict_help_says_what_the_model_expects() {
    let help = vitcore(words("predict --help")).ok().stdout;
    for part in [
        "light digit on a dark background",
        "--no-auto-invert",
        "alpha",
        "16 bits",
        "blank",
    ] {
        assert!(help.contains(part), "`predict --help` lacks {part:?}:\n{help}");
    }
}

// ---- 3. Non-finite numbers never pass silently ----

/// A copy of the tiny run whose `best.safetensors` has tensor `name` changed by `edit`.
fn run_with_edited_tensor(tmp: &TempDir, name: &str, edit: impl Fn(&mut [f32])) -> PathBuf {
    let run = tmp.join("run");
    copy_run(tiny_run(), &run);
    let path = run.join("best.safetensors");
    let (tensors, meta) = vitcore::checkpoint::load(&path).unwrap();
    let edited: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| {
            if n != name {
                return (n, t);
            }
            let mut v = t.to_vec();
            edit(&mut v);
            let shape = t.shape().to_vec();
            (n, Tensor::from_vec(v, &shape).unwrap())
        })
        .collect();
    let refs: Vec<(String, &Tensor)> = edited.iter().map(|(n, t)| (n.clone(), t)).collect();
    vitcore::checkpoint::save(&path, &refs, &meta).unwrap();
    run
}

#[test]
fn a_checkpoint_holding_nan_or_inf_is_refused_naming_the_tensor() {
    let tmp = TempDir::new("nan");
    let run = run_with_edited_tensor(&tmp, "head.bias", |v| v[3] = f32::NAN);
    let csv = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..20, false));
    let sub = tmp.join("sub.csv");
    vitcore(args_with(
        "predict",
        &[&run, Path::new("--input"), &csv, Path::new("--out"), &sub],
    ))
    .fails_mentioning(&["best.safetensors", "`head.bias`", "NaN", "element 3"]);
    assert!(!sub.exists(), "a submission was written from a NaN checkpoint");
    vitcore(args_with("eval", &[&run])).fails_mentioning(&["`head.bias`", "NaN"]);

    // A checkpoint written by another program (the bytes of the format, as PyTorch writes them)
    // with +Inf in the position embedding.
    let (tensors, _) = vitcore::checkpoint::load(tiny_run().join("best.safetensors")).unwrap();
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in &tensors {
        let mut v = t.to_vec();
        if name == "pos_embed" {
            v[0] = f32::INFINITY;
        }
        let begin = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape(), "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    fs::write(run.join("best.safetensors"), bytes).unwrap();
    vitcore(args_with("eval", &[&run])).fails_mentioning(&["`pos_embed`", "inf"]);
}

#[test]
fn predict_and_eval_fail_when_the_logits_are_not_finite() {
    // Finite parameters whose products overflow f32: the logits are ±inf or NaN.
    let tmp = TempDir::new("inf-logits");
    let run = run_with_edited_tensor(&tmp, "head.weight", |v| v.iter_mut().for_each(|x| *x = 3e38));
    let csv = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..20, false));
    let sub = tmp.join("sub.csv");
    vitcore(args_with(
        "predict",
        &[&run, Path::new("--input"), &csv, Path::new("--out"), &sub],
    ))
    .fails_mentioning(&["not a finite number"]);
    assert!(!sub.exists(), "a submission was written from non-finite logits");
    let png = tmp.join("digit.png");
    vitcore::data::image::save_png_gray(&png, mnist().1.image(0), 28, 28).unwrap();
    let r = vitcore(args_with("predict", &[&run, Path::new("--input"), &png]));
    r.fails_mentioning(&["not a finite number"]);
    assert!(!r.stdout.contains("%"), "{}", r.stdout);
    let labelled = tmp.write("labelled.csv", kaggle_csv(&mnist().1, 0..20, true));
    vitcore(args_with("eval --csv", &[&labelled, &run])).fails_mentioning(&["not a finite number"]);
}

// ---- 4. Never overwrite an input ----

#[test]
fn predict_never_writes_over_an_input_by_any_spelling() {
    let tmp = TempDir::new("overwrite");
    let text = kaggle_csv(&mnist().1, 0..10, false);
    let input = tmp.write("t.csv", &text);
    let abs = input.display().to_string();
    std::os::unix::fs::symlink(&input, tmp.join("link.csv")).unwrap();
    fs::hard_link(&input, tmp.join("hard.csv")).unwrap();
    let run = tmp.join("run");
    copy_run(tiny_run(), &run);
    let run_files = snapshot(&run);
    for out in [
        "t.csv",
        "./t.csv",
        abs.as_str(),
        "link.csv",
        "hard.csv",
        "run/best.safetensors",
        "run/config.json",
    ] {
        let r = vitcore_in(tmp.path(), ["predict", "run", "--input", "t.csv", "--out", out]);
        r.fails_mentioning(&["refusing to write --out", out, "same file as the input"]);
        assert_eq!(
            fs::read_to_string(&input).unwrap(),
            text,
            "--out {out} overwrote the input"
        );
    }
    assert_eq!(snapshot(&run), run_files, "the run was written to");
    // Another file is fine.
    vitcore_in(tmp.path(), words("predict run --input t.csv --out sub.csv")).ok();
    assert_eq!(fs::read_to_string(&input).unwrap(), text);
}

#[test]
fn train_never_writes_a_run_file_over_its_data() {
    // The training CSV is named like a run file, in the folder given as --out.
    let tmp = TempDir::new("overwrite-train");
    let text = kaggle_csv(&mnist().0, 0..100, true);
    let data = tmp.write("exp/log.csv", &text);
    let out = tmp.join("exp");
    let r = vitcore(args_with(
        &format!("train csv {TINY_MODEL} --epochs 1 --train"),
        &[&data, Path::new("--out"), &out],
    ));
    r.fails_mentioning(&["refusing to write log.csv", "same file as the input"]);
    assert_eq!(fs::read_to_string(&data).unwrap(), text);
    assert_eq!(snapshot(&out).len(), 1, "nothing else was written");
}

// ---- 5. Quiet exit on a closed pipe ----

/// Run `vitcore ARGS` (in the repository root) with stdout (and with `close_stderr` stderr too)
/// a pipe whose reading end is already closed: every write to it fails, as after `| head -1`.
fn with_closed_pipe(args: &[std::ffi::OsString], close_stderr: bool) -> Run {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = vitcore_command(&repo_root());
    cmd.args(args).stdout(Stdio::from(writer.try_clone().unwrap()));
    cmd.stderr(if close_stderr {
        Stdio::from(writer)
    } else {
        Stdio::piped()
    });
    let out = cmd.output().unwrap();
    Run::from_output(args, out)
}

#[test]
fn a_closed_pipe_ends_a_command_quietly_and_never_a_training_run() {
    let tmp = TempDir::new("pipe");
    let png = tmp.join("digit.png");
    vitcore::data::image::save_png_gray(&png, mnist().1.image(0), 28, 28).unwrap();
    let csv = tmp.write("test.csv", kaggle_csv(&mnist().1, 0..10, true));
    let sub = tmp.join("sub.csv");
    let run = tiny_run();
    for args in [
        args_with("bench kernels --quick --device cpu --filter add", &[]),
        args_with("eval --csv", &[&csv, run]),
        args_with("predict --input", &[&png, run]),
        args_with("predict --input", &[&csv, Path::new("--out"), &sub, run]),
        args_with("--help", &[]),
    ] {
        let r = with_closed_pipe(&args, false);
        assert_eq!(r.code, Some(0), "{}", r.describe());
        assert!(
            !r.stderr.contains("panicked") && !r.stderr.contains("Broken pipe"),
            "{}",
            r.describe()
        );
    }
    assert!(sub.exists(), "predict writes its file before it prints");

    // Training goes on to its end; its lines go to stderr instead.
    let out = tmp.join("run");
    let train = args_with(
        &format!("train mnist {TINY_MODEL} --train-limit 300 --test-limit 100 --epochs 2 --out"),
        &[&out],
    );
    let r = with_closed_pipe(&train, false);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stderr.contains("stdout is closed: training goes on"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("epoch   2/2") && r.stderr.contains("test accuracy"),
        "{}",
        r.describe()
    );
    assert_eq!(log_rows(&out).len(), 2);
    assert!(out.join("test_metrics.json").exists());
    // With stderr closed too (`2>&1 | head`), it still finishes.
    let out2 = tmp.join("run2");
    let r = with_closed_pipe(
        &args_with(
            &format!("train mnist {TINY_MODEL} --train-limit 300 --test-limit 100 --epochs 1 --out"),
            &[&out2],
        ),
        true,
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(out2.join("test_metrics.json").exists());
}

// ---- 7. Messages that help ----

#[test]
fn run_folder_is_announced_only_once_it_exists() {
    let tmp = TempDir::new("run-folder");
    let out = tmp.join("run");
    let r = vitcore(args_with(
        &format!("train mnist {TINY_MODEL} --epochs 1 --data"),
        &[&tmp.join("no-such-mnist"), Path::new("--out"), &out],
    ));
    r.fails_mentioning(&["no-such-mnist"]);
    assert!(
        !r.stdout.contains("run folder"),
        "announced a folder that was never made:\n{}",
        r.stdout
    );
    assert!(!out.exists());
}

#[test]
fn a_semicolon_csv_or_a_huge_field_is_quoted_briefly() {
    let tmp = TempDir::new("semicolon");
    let semicolon = kaggle_csv(&mnist().1, 0..3, true).replace(',', ";");
    let p = tmp.write("excel.csv", semicolon);
    let r = vitcore(args_with(
        &format!("train csv {TINY_MODEL} --epochs 1 --train"),
        &[&p, Path::new("--out"), &tmp.join("run")],
    ));
    let err = r.fails_mentioning(&["excel.csv:1:", "separated by ';'", "comma-separated"]);
    assert!(err.len() < 600, "{} bytes of error:\n{err}", err.len());
    let sub = tmp.join("sub.csv");
    let err = vitcore(args_with(
        "predict",
        &[tiny_run(), Path::new("--input"), &p, Path::new("--out"), &sub],
    ))
    .fails_mentioning(&["separated by ';'"])
    .to_string();
    assert!(err.len() < 600, "{err}");

    // A data row whose field is a whole line of another format.
    let mut text = kaggle_csv(&mnist().1, 0..3, false);
    let junk = "x".repeat(7000);
    text = text.replacen("\n0,", &format!("\n{junk},"), 1);
    let p = tmp.write("junk.csv", text);
    let err = vitcore(args_with(
        "predict",
        &[tiny_run(), Path::new("--input"), &p, Path::new("--out"), &sub],
    ))
    .fails_mentioning(&["junk.csv:2:", "is not an integer", "(7000 characters)"])
    .to_string();
    assert!(err.len() < 600, "{err}");
}

#[test]
fn when_name_gz_and_name_both_exist_it_says_which_is_read() {
    let tmp = TempDir::new("gz-and-raw");
    let dir = tmp.join("mnist");
    write_small_mnist(&dir, 200, 100);
    let raw = fs::read(dir.join("t10k-images-idx3-ubyte")).unwrap();
    fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gzip(&raw)).unwrap();
    let r = vitcore(args_with("eval --data", &[&dir, tiny_run()])).ok();
    let says: Vec<&str> = r.stderr.lines().filter(|l| l.contains("both")).collect();
    assert_eq!(says.len(), 1, "{}", r.stderr);
    assert!(
        says[0].contains("t10k-images-idx3-ubyte") && says[0].contains("reading the .gz"),
        "{}",
        says[0]
    );
    assert!(!says[0].contains("t10k-labels"), "{}", says[0]);
    // Only one of each: nothing said.
    fs::remove_file(dir.join("t10k-images-idx3-ubyte")).unwrap();
    let r = vitcore(args_with("eval --data", &[&dir, tiny_run()])).ok();
    assert!(!r.stderr.contains("both"), "{}", r.stderr);
}
