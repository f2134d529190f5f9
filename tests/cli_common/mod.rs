//! Shared helpers of the command-line tests (`tests/cli_*.rs`): running the `vitcore` binary,
//! per-test temporary folders, the real MNIST files, and writers for generated inputs (Kaggle
//! CSVs, IDX files, PNGs).
//!
//! Every invocation runs with `RAYON_NUM_THREADS=2`, so runs that must repeat exactly (same
//! `--seed`) use the same thread count on any machine, and with the repository root as working
//! directory (so `--data data/mnist`, the default, finds the real MNIST files). Tests always pass
//! `--out` so nothing is written into the repository.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use vitcore::data::Dataset;

/// Exit status of a Rust panic.
pub const PANIC_EXIT_CODE: i32 = 101;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn mnist_dir() -> PathBuf {
    repo_root().join("data").join("mnist")
}

/// A fresh, empty folder `<tmp>/vitcore-cli-<name>-<pid>-<n>`, removed when dropped unless the
/// test is failing (then it is kept, and its path is in the panic message, for a look).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("vitcore-cli-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// What one invocation of the binary did.
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// What a finished process of `vitcore ARGS` did.
    pub fn from_output(args: &[std::ffi::OsString], out: Output) -> Run {
        Run {
            args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "vitcore {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Assert exit status 0 and no panic; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.describe());
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.describe());
        self
    }

    /// Assert a clean failure: a non-zero exit status that is not a panic (101) or a signal, and
    /// no "panicked" on stderr. Returns stderr.
    #[track_caller]
    pub fn fails_cleanly(&self) -> &str {
        let d = self.describe();
        assert!(self.code.is_some(), "killed by a signal:\n{d}");
        assert_ne!(self.code, Some(0), "expected a failure:\n{d}");
        assert_ne!(self.code, Some(PANIC_EXIT_CODE), "exit code 101 is a panic:\n{d}");
        assert!(!self.stderr.contains("panicked"), "panic message on stderr:\n{d}");
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "panic hint on stderr:\n{d}");
        &self.stderr
    }

    /// [`Run::fails_cleanly`], and stderr mentions every one of `parts`. Returns stderr.
    #[track_caller]
    pub fn fails_mentioning(&self, parts: &[&str]) -> &str {
        let stderr = self.fails_cleanly();
        for part in parts {
            assert!(stderr.contains(part), "stderr lacks {part:?}:\n{}", self.describe());
        }
        stderr
    }
}

/// Run `vitcore ARGS` from the repository root with 2 rayon threads.
pub fn vitcore<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    vitcore_in(&repo_root(), args)
}

/// The `vitcore` command, to be run in `dir` with 2 rayon threads and no backtraces.
pub fn vitcore_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitcore"));
    c.current_dir(dir)
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE");
    c
}

/// Run `vitcore ARGS` in `dir` (relative paths in ARGS are relative to it).
pub fn vitcore_in<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let out: Output = vitcore_command(dir)
        .args(&args)
        .output()
        .expect("cannot start the vitcore binary");
    Run::from_output(&args, out)
}

/// `s` split on whitespace, as arguments.
pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Arguments: `s` split on whitespace, then the given paths.
pub fn args_with(s: &str, paths: &[&Path]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = s.split_whitespace().map(Into::into).collect();
    v.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
    v
}

/// A tiny, fast model (3.5k parameters, patch 7): for tests of the plumbing, not of accuracy.
pub const TINY_MODEL: &str = "--patch 7 --embed-dim 16 --depth 1 --heads 2 --mlp-dim 32 --batch-size 64 --quiet";

/// The real MNIST `(train, test)` sets, loaded once per test binary.
pub fn mnist() -> &'static (Dataset, Dataset) {
    static DATA: OnceLock<(Dataset, Dataset)> = OnceLock::new();
    DATA.get_or_init(|| vitcore::data::load_mnist(mnist_dir()).expect("the MNIST files in data/mnist"))
}

/// Kaggle digit-recognizer CSV text for images `range` of `ds`: `label,pixel0..pixel783` rows
/// when `labelled`, else `pixel0..pixel783` (test.csv).
pub fn kaggle_csv(ds: &Dataset, range: std::ops::Range<usize>, labelled: bool) -> String {
    let n = ds.image_len();
    let mut s = String::new();
    if labelled {
        s.push_str("label,");
    }
    s.push_str(&(0..n).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(","));
    s.push('\n');
    for i in range {
        if labelled {
            s.push_str(&format!("{},", ds.label(i).unwrap()));
        }
        s.push_str(&ds.image(i).iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
        s.push('\n');
    }
    s
}

/// Raw (uncompressed) IDX image file of images `range` of `ds`.
pub fn idx_images(ds: &Dataset, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut v: Vec<u8> = [0x803u32, range.len() as u32, ds.height as u32, ds.width as u32]
        .into_iter()
        .flat_map(u32::to_be_bytes)
        .collect();
    for i in range {
        v.extend_from_slice(ds.image(i));
    }
    v
}

/// Raw IDX label file of images `range` of `ds`.
pub fn idx_labels(ds: &Dataset, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut v: Vec<u8> = [0x801u32, range.len() as u32]
        .into_iter()
        .flat_map(u32::to_be_bytes)
        .collect();
    v.extend(range.map(|i| ds.label(i).unwrap()));
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A small, valid MNIST folder in `dir`: the first `n_train` training and `n_test` test images of
/// the real MNIST, as raw (uncompressed) IDX files named like the originals.
pub fn write_small_mnist(dir: &Path, n_train: usize, n_test: usize) {
    let (train, test) = mnist();
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("train-images-idx3-ubyte"), idx_images(train, 0..n_train)).unwrap();
    fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(train, 0..n_train)).unwrap();
    fs::write(dir.join("t10k-images-idx3-ubyte"), idx_images(test, 0..n_test)).unwrap();
    fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(test, 0..n_test)).unwrap();
}

/// Train a tiny model for 1 epoch on 600 MNIST images into `out` (about a second).
pub fn train_tiny(out: &Path) -> Run {
    vitcore(args_with(
        &format!("train mnist {TINY_MODEL} --train-limit 600 --test-limit 200 --epochs 1 --out"),
        &[out],
    ))
    .ok()
}

/// The data rows of a run's `log.csv` (after the header), as fields.
pub fn log_rows(run: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(run.join("log.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

/// The log rows without the wall-clock `seconds` column (the last), for comparing runs.
pub fn log_rows_without_seconds(run: &Path) -> Vec<Vec<String>> {
    log_rows(run)
        .into_iter()
        .map(|mut r| {
            r.pop();
            r
        })
        .collect()
}

/// Assert that the run folders `a` and `b` hold the same run (e.g. a resumed run and the
/// uninterrupted one): `log.csv` (but for the wall-clock seconds), every tensor and the
/// metadata of `last.safetensors` (whose metadata order is not fixed, so by contents),
/// `best.safetensors` byte for byte, and `test_metrics.json`.
#[track_caller]
pub fn assert_same_run(a: &Path, b: &Path) {
    let (sa, sb) = (a.display(), b.display());
    assert_eq!(
        log_rows_without_seconds(a),
        log_rows_without_seconds(b),
        "log.csv of {sa} and {sb} differ"
    );
    // The parameters and the optimiser state at the end.
    assert_eq!(
        checkpoint_contents(&a.join("last.safetensors")),
        checkpoint_contents(&b.join("last.safetensors")),
        "last.safetensors of {sa} and {sb} differ"
    );
    assert_eq!(
        fs::read(a.join("best.safetensors")).unwrap(),
        fs::read(b.join("best.safetensors")).unwrap(),
        "best.safetensors of {sa} and {sb} differ"
    );
    assert_eq!(
        read_json(&a.join("test_metrics.json")),
        read_json(&b.join("test_metrics.json"))
    );
}

/// A tiny trained run shared by the tests of one test binary (trained on first use; embed_dim
/// 16, 28x28 grayscale).
pub fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = shared_dir("tiny-run");
        train_tiny(&dir);
        dir
    })
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// A checkpoint's tensors, bit for bit (name, shape, f32 bits), and its metadata.
pub type CheckpointContents = (
    Vec<(String, Vec<usize>, Vec<u32>)>,
    std::collections::HashMap<String, String>,
);

/// Every tensor of a checkpoint, bit for bit, and its metadata.
pub fn checkpoint_contents(path: &Path) -> CheckpointContents {
    let (tensors, meta) = vitcore::checkpoint::load(path).unwrap_or_else(|e| panic!("{e}"));
    let t = tensors
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec(), t.data().iter().map(|x| x.to_bits()).collect()))
        .collect();
    (t, meta)
}

/// All files of a folder (name → bytes), sorted, for "left untouched" checks.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Copy the files of run folder `from` into a new folder `to`.
pub fn copy_run(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A folder for a run shared by the tests of one test binary: `<cargo's target tmp>/<name>-<pid>`
/// (fresh). Folders of earlier invocations whose process is gone are removed (Linux: /proc).
pub fn shared_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("{name}-");
    if Path::new("/proc/self").exists() {
        for e in fs::read_dir(&base).into_iter().flatten().flatten() {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = file_name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}
