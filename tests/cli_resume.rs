//! `--resume` does what the user asked or says why not, and Ctrl-C / SIGTERM stop a run safely:
//! through the binary, on a tiny model and a few hundred images (each run well under a second).
//!
//! The interrupt tests are not timed: the run reads its training CSV from a FIFO, so it waits
//! for its data until the test has sent the signal (after the `device:` line, by when the
//! handlers are installed). The signal therefore always lands before the first step, and the
//! run stops after exactly that step.

mod cli_common;

use cli_common::*;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Dropout and augmentation on, so every random stream must be restored exactly.
const FLAGS: &str = "--patch 7 --embed-dim 16 --depth 1 --heads 2 --mlp-dim 32 --batch-size 64 --quiet \
    --dropout 0.1 --rotate 10 --shift 2 --seed 3";

/// A Kaggle train.csv of the first `n` MNIST training images (offset by `from`).
fn train_csv(tmp: &TempDir, name: &str, from: usize, n: usize) -> PathBuf {
    tmp.write(name, kaggle_csv(&mnist().0, from..from + n, true))
}

/// `vitcore train csv FLAGS extra --train csv --out out`, which must succeed.
fn train(csv: &Path, out: &Path, extra: &str) -> Run {
    vitcore(args_with(
        &format!("train csv {FLAGS} {extra} --train"),
        &[csv, Path::new("--out"), out],
    ))
    .ok()
}

/// A fresh folder holding `train.csv` (the first `n` MNIST training images) and a FIFO
/// `train.fifo` to feed the same bytes through: (folder, csv, its bytes, fifo).
fn csv_and_fifo(name: &str, n: usize) -> (TempDir, PathBuf, Vec<u8>, PathBuf) {
    let tmp = TempDir::new(name);
    let csv = train_csv(&tmp, "train.csv", 0, n);
    let data = fs::read(&csv).unwrap();
    let fifo = tmp.join("train.fifo");
    let ok = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success();
    assert!(ok, "mkfifo {}", fifo.display());
    (tmp, csv, data, fifo)
}

/// Run `vitcore ARGS`, whose training data is the FIFO `fifo`: once it has printed its
/// `device:` line, send it `signals` (names for `kill`), then feed `data` into the FIFO (with
/// `None`, nothing: it waits for its data until a signal ends it).
/// Wait (up to a minute, then go on) until signal `sig` is no longer pending for process `pid`:
/// Linux lists pending signals in /proc/PID/status (`SigPnd` for the thread, `ShdPnd` for the
/// process), one bit per signal number.
fn wait_delivered(pid: u32, sig: &str) {
    let number = match sig {
        "INT" => 2,
        "TERM" => 15,
        other => panic!("no number for SIG{other}"),
    };
    let pending = || {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().any(|l| {
            (l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
                && u64::from_str_radix(l.split(':').nth(1).unwrap_or("0").trim(), 16).unwrap_or(0) >> (number - 1) & 1
                    == 1
        })
    };
    for _ in 0..6000 {
        if !pending() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn run_signalled(args: &[OsString], fifo: &Path, data: Option<&[u8]>, signals: &[&str]) -> Run {
    let mut child = vitcore_command(&repo_root())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start vitcore");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut err_text = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        err_text += &line;
        if line.starts_with("device:") {
            break;
        }
    }
    for (k, sig) in signals.iter().enumerate() {
        let sent = Command::new("kill")
            .args([format!("-{sig}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{sig}");
        if k + 1 < signals.len() {
            // Two signals of one kind sent before the first is delivered merge into one (POSIX
            // does not queue them): wait until this one has been taken.
            wait_delivered(child.id(), sig);
        }
    }
    // The feeder blocks until vitcore opens the FIFO (or, if it exited without, forever: then
    // the test fails below instead of hanging).
    let (done_tx, done_rx) = mpsc::channel();
    if let Some(data) = data {
        let (fifo, data) = (fifo.to_path_buf(), data.to_vec());
        std::thread::spawn(move || {
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .and_then(|mut f| f.write_all(&data));
            let _ = done_tx.send(());
        });
    }
    let mut out_text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out_text).unwrap();
    stderr.read_to_string(&mut err_text).unwrap();
    let status = child.wait().unwrap();
    let run = Run {
        args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        code: status.code(),
        stdout: out_text,
        stderr: err_text,
    };
    if data.is_some() {
        // A hang guard, not a timing assertion: the feeder ends as soon as vitcore has read.
        let fed = done_rx.recv_timeout(Duration::from_secs(120)).is_ok();
        assert!(fed, "vitcore never read its FIFO:\n{}", run.describe());
    }
    run
}

#[test]
fn ctrl_c_saves_the_step_and_resume_reproduces_the_uninterrupted_run_exactly() {
    // 540 images to train on: 9 steps of 64 per epoch.
    let (tmp, csv, data, fifo) = csv_and_fifo("interrupt", 600);
    let whole = tmp.join("whole");
    train(&csv, &whole, "--epochs 2");

    let parts = tmp.join("parts");
    let args = args_with(
        &format!("train csv {FLAGS} --epochs 2 --train"),
        &[&fifo, Path::new("--out"), &parts],
    );
    let r = run_signalled(&args, &fifo, Some(&data), &["INT"]);
    assert_eq!(r.code, Some(130), "Ctrl-C exits 130:\n{}", r.describe());
    let shown = parts.display().to_string();
    let how = format!("vitcore train csv --resume {shown}");
    for part in [
        "interrupted by SIGINT",
        "at epoch 1, step 1 of 9",
        "last.safetensors",
        how.as_str(),
    ] {
        assert!(r.stderr.contains(part), "stderr lacks {part:?}:\n{}", r.describe());
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.describe());
    let (_, meta) = checkpoint_contents(&parts.join("last.safetensors"));
    assert_eq!((meta["epoch"].as_str(), meta["epoch_step"].as_str()), ("0", "1"));
    assert!(log_rows(&parts).is_empty(), "no epoch was finished");

    // The command it printed continues from that step (the data again through the FIFO).
    let printed = how.strip_prefix("vitcore ").unwrap();
    let r = run_signalled(&args_with(&format!("{printed} --quiet"), &[]), &fifo, Some(&data), &[]).ok();
    assert!(r.stdout.contains("at epoch 1, step 1 of 9"), "{}", r.stdout);
    assert_same_run(&parts, &whole);
}

#[test]
fn sigterm_saves_and_exits_143_and_a_second_ctrl_c_exits_at_once_leaving_the_checkpoint_alone() {
    let (tmp, _, data, fifo) = csv_and_fifo("sigterm", 300);
    let run = tmp.join("run");
    let args = args_with(
        &format!("train csv {FLAGS} --epochs 2 --train"),
        &[&fifo, Path::new("--out"), &run],
    );
    let r = run_signalled(&args, &fifo, Some(&data), &["TERM"]);
    assert_eq!(r.code, Some(143), "SIGTERM exits 143:\n{}", r.describe());
    assert!(r.stderr.contains("interrupted by SIGTERM"), "{}", r.describe());
    let saved = fs::read(run.join("last.safetensors")).unwrap();

    // A write that a kill interrupted leaves a temporary file; the next start removes it.
    let stale = run.join("last.safetensors.tmp-4294967295-0");
    fs::write(&stale, b"half a checkpoint").unwrap();
    // Two Ctrl-C while the resumed run waits for its data: it exits at once, saving nothing.
    let resume = args_with(
        &format!("train csv --quiet --train {} --resume", fifo.display()),
        &[&run],
    );
    let r = run_signalled(&resume, &fifo, None, &["INT", "INT"]);
    assert_eq!(r.code, Some(130), "{}", r.describe());
    assert!(
        !r.stderr.contains("interrupted by"),
        "the second Ctrl-C must not wait:\n{}",
        r.describe()
    );
    assert_eq!(
        fs::read(run.join("last.safetensors")).unwrap(),
        saved,
        "last.safetensors was touched"
    );
    assert!(stale.exists(), "nothing ran yet that could remove it");

    let r = run_signalled(&resume, &fifo, Some(&data), &[]).ok();
    assert!(r.stderr.contains("removed 1 temporary file"), "{}", r.describe());
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert_eq!(log_rows(&run).len(), 2);
}

#[test]
fn an_extension_is_saved_before_it_starts_so_a_plain_resume_finishes_it() {
    // Constant schedule: 1 epoch + 2 more is exactly a 3-epoch run.
    let (tmp, csv, data, fifo) = csv_and_fifo("extend", 300);
    let whole = tmp.join("whole");
    train(&csv, &whole, "--schedule constant --epochs 3");
    let run = tmp.join("run");
    train(&csv, &run, "--schedule constant --epochs 1");

    // Extend to 3, interrupted in the first new epoch (the data through a FIFO, see above).
    let args = args_with(
        &format!("train csv --quiet --epochs 3 --train {} --resume", fifo.display()),
        &[&run],
    );
    let r = run_signalled(&args, &fifo, Some(&data), &["INT"]);
    assert_eq!(r.code, Some(130), "{}", r.describe());
    assert!(
        r.stdout.contains("resume: --epochs 3 replaces the run's 1"),
        "one line says what changed:\n{}",
        r.describe()
    );
    assert_eq!(
        read_json(&run.join("config.json"))["epochs"],
        3,
        "the extension is saved"
    );

    // A plain resume (the data at its place saved by the extension: the FIFO) goes on to epoch 3.
    let r = run_signalled(
        &args_with("train csv --quiet --resume", &[&run]),
        &fifo,
        Some(&data),
        &[],
    )
    .ok();
    assert!(r.stdout.contains("at epoch 2, step 1 of"), "{}", r.stdout);
    assert_same_run(&run, &whole);
}

#[test]
fn a_finished_run_has_nothing_to_do_and_is_left_untouched() {
    let tmp = TempDir::new("done");
    let csv = train_csv(&tmp, "train.csv", 0, 300);
    let run = tmp.join("run");
    train(&csv, &run, "--epochs 1");
    let before = snapshot(&run);
    for extra in ["", "--epochs 1", "--lr 0.01"] {
        let r = vitcore(args_with(&format!("train csv --quiet {extra} --resume"), &[&run])).ok();
        assert!(
            r.stdout.contains("has trained 1 epoch(s)") && r.stdout.contains("Nothing to do"),
            "{extra}: {}",
            r.stdout
        );
        assert!(r.stdout.contains("--epochs N"), "says how to do more:\n{}", r.stdout);
        assert!(!r.stdout.contains("training ViT"), "{}", r.stdout);
        assert_eq!(snapshot(&run), before, "{extra}: the finished run was rewritten");
    }
}

#[test]
fn flags_that_would_make_another_run_are_refused_naming_the_saved_value() {
    let tmp = TempDir::new("refuse");
    let csv = train_csv(&tmp, "train.csv", 0, 300);
    let run = tmp.join("run");
    train(&csv, &run, "--epochs 1");
    let before = snapshot(&run);
    for (flags, says) in [
        ("--batch-size 4", "--batch-size 4: the run has batch_size = 64"),
        ("--seed 1", "--seed 1: the run has seed = 3"),
        ("--embed-dim 8", "--embed-dim 8: the run has model.embed_dim = 16"),
        ("--dropout 0.5", "--dropout 0.5: the run has model.dropout = 0.1"),
        ("--train-limit 100", "--train-limit 100: the run has train_limit = none"),
        ("--optimizer adam", "--optimizer adam: the run has optimizer = adamw"),
        ("--preset seed", "--preset seed: the run has preset default"),
    ] {
        let r = vitcore(args_with(
            &format!("train csv --quiet --epochs 2 {flags} --resume"),
            &[&run],
        ));
        r.fails_mentioning(&[says, "different run", "--lr"]);
        assert_eq!(snapshot(&run), before, "{flags}: a refused resume changed the run");
    }
    // All refused flags are named at once; a flag equal to the saved value is not refused.
    let r = vitcore(args_with(
        "train csv --quiet --epochs 2 --batch-size 64 --seed 9 --rotate 0 --resume",
        &[&run],
    ));
    let err = r.fails_mentioning(&["--seed 9", "--rotate 0"]);
    assert!(!err.contains("--batch-size"), "{err}");
    // --out elsewhere, and the other data command, are refused too.
    let other = tmp.join("other");
    vitcore(args_with("train csv --resume", &[&run, Path::new("--out"), &other]))
        .fails_mentioning(&["--out", "its own folder"]);
    vitcore(args_with("train mnist --resume", &[&run])).fails_mentioning(&["csv", "train csv --resume"]);
    assert_eq!(snapshot(&run), before);
}

#[test]
fn flags_that_may_change_apply_with_a_line_each_and_are_saved() {
    let tmp = TempDir::new("apply");
    let csv = train_csv(&tmp, "train.csv", 0, 300);
    let run = tmp.join("run");
    train(&csv, &run, "--epochs 1 --lr 0.002");
    let r = vitcore(args_with(
        "train csv --quiet --epochs 2 --lr 0.001 --min-lr 0.0001 --early-stopping 4 --resume",
        &[&run],
    ))
    .ok();
    for line in [
        "resume: --epochs 2 replaces the run's 1",
        "resume: --lr 0.001 replaces the run's 0.002",
        "resume: --min-lr 0.0001 replaces the run's 0.00001",
        "resume: --early-stopping 4 replaces the run's none",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?}:\n{}", r.stdout);
    }
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(
        (&cfg["epochs"], &cfg["lr"], &cfg["min_lr"], &cfg["early_stopping"]),
        (&2.into(), &0.001.into(), &0.0001.into(), &4.into())
    );
    assert_eq!(log_rows(&run).len(), 2);
    let lr2: f64 = log_rows(&run)[1][5].parse().unwrap();
    assert!(
        lr2 <= 0.001,
        "epoch 2 trained with the new --lr, not the run's 0.002: {lr2}"
    );
}

#[test]
fn the_data_place_is_absolute_and_a_moved_data_set_is_found_or_named() {
    let tmp = TempDir::new("data-place");
    let work = tmp.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("train.csv"), kaggle_csv(&mnist().0, 0..300, true)).unwrap();
    // Started with a relative --train and --out, in `work`.
    vitcore_in(
        &work,
        words(&format!("train csv {FLAGS} --epochs 1 --train train.csv --out run")),
    )
    .ok();
    let run = work.join("run");
    let saved = read_json(&run.join("data.json"))["csv"]["train"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Path::new(&saved).is_absolute(), "data.json holds {saved}");
    assert!(fsutil_same(Path::new(&saved), &work.join("train.csv")));

    // Resumed from another directory (the repository root), with no --train.
    vitcore(args_with("train csv --quiet --epochs 2 --resume", &[&run])).ok();
    assert_eq!(log_rows(&run).len(), 2);

    // The data moved: a plain resume names where it looked, and the new place works.
    let moved = tmp.join("moved.csv");
    fs::rename(work.join("train.csv"), &moved).unwrap();
    let r = vitcore(args_with("train csv --quiet --epochs 3 --resume", &[&run]));
    r.fails_mentioning(&[&saved, "data.json", "--train"]);
    let shown = moved.display().to_string();
    let r = vitcore(args_with(
        "train csv --quiet --epochs 3 --resume",
        &[&run, Path::new("--train"), &moved],
    ))
    .ok();
    assert!(r.stdout.contains(&format!("resume: --train {shown}")), "{}", r.stdout);
    assert_eq!(log_rows(&run).len(), 3);
    let now = read_json(&run.join("data.json"))["csv"]["train"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(now, shown, "the new place is saved");

    // Other images under the run's name are refused, naming both.
    let other = tmp.write("other.csv", kaggle_csv(&mnist().0, 300..600, true));
    let r = vitcore(args_with(
        "train csv --quiet --epochs 4 --resume",
        &[&run, Path::new("--train"), &other],
    ));
    r.fails_mentioning(&["other.csv", "not the images the run trained on"]);
    assert_eq!(log_rows(&run).len(), 3);
}

fn fsutil_same(a: &Path, b: &Path) -> bool {
    vitcore::fsutil::same_file(a, b)
}

#[test]
fn train_help_says_which_flags_apply_on_resume() {
    let help = vitcore(words("train --help")).ok().stdout;
    for (_, flag, may) in vitcore::train::resume::RULES {
        if *may {
            assert!(help.contains(flag), "`train --help` does not name {flag}:\n{help}");
        }
    }
    for words_ in ["--resume", "refused", "Ctrl-C", "130", "stderr"] {
        assert!(help.contains(words_), "`train --help` lacks {words_:?}:\n{help}");
    }
}
