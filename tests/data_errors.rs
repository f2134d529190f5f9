//! Bad inputs, generated here into temp directories: each must be an error (never a panic) whose
//! message names the file and the specific problem (expected vs found, line numbers for CSV).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;
use flate2::Compression;
use vitcore::data::csv::load_kaggle_csv;
use vitcore::data::idx::{load_idx_dataset, MNIST_FILES};
use vitcore::data::image::{load_gray_image, save_png_gray};
use vitcore::data::{load_mnist, read_idx_images, read_idx_labels};
use vitcore::Error;

/// A fresh, empty directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("vitcore-data-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An IDX image file: `count` images of `rows x cols` with the given magic and pixel bytes.
fn idx_images(magic: u32, count: u32, rows: u32, cols: u32, pixels: usize) -> Vec<u8> {
    let header = [magic, count, rows, cols].into_iter().flat_map(u32::to_be_bytes);
    header.chain((0..pixels).map(|i| (i % 251) as u8)).collect()
}

fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let header = [0x801u32, count].into_iter().flat_map(u32::to_be_bytes);
    header.chain(labels.iter().copied()).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The error's message, checked to mention `path`'s file name and every one of `parts`.
fn assert_error_mentions<T: std::fmt::Debug>(result: Result<T, Error>, path: &Path, parts: &[&str]) -> String {
    let msg = result.expect_err("expected an error").to_string();
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(file), "message does not name the file {file}: {msg}");
    for part in parts {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
    msg
}

#[test]
fn corrupt_idx_magic() {
    let tmp = TempDir::new("magic");
    let p = tmp.write("images.idx", idx_images(0x0000_0804, 1, 2, 2, 4));
    assert_error_mentions(
        read_idx_images(&p),
        &p,
        &["magic", "expected 0x00000803", "found 0x00000804"],
    );
    // A label file where images are expected gets a hint.
    let p = tmp.write("swapped.idx", idx_labels(3, &[1, 2, 3]));
    assert_error_mentions(read_idx_images(&p), &p, &["found 0x00000801", "label file"]);
    let p = tmp.write("labels.idx", idx_images(0x803, 1, 2, 2, 4));
    assert_error_mentions(read_idx_labels(&p), &p, &["expected 0x00000801", "found 0x00000803"]);
}

#[test]
fn truncated_idx_data() {
    let tmp = TempDir::new("truncated");
    // Header promises 3 images of 28x28 = 2352 bytes; only 2 images are there.
    let p = tmp.write("images.idx", idx_images(0x803, 3, 28, 28, 2 * 784));
    assert_error_mentions(
        read_idx_images(&p),
        &p,
        &["truncated", "expected", "2352", "found 1568"],
    );
    // The same inside a valid gzip stream.
    let p = tmp.write("images.idx.gz", gzip(&idx_images(0x803, 3, 28, 28, 2 * 784)));
    assert_error_mentions(read_idx_images(&p), &p, &["truncated", "2352", "found 1568"]);
    let p = tmp.write("labels.idx", idx_labels(5, &[1, 2]));
    assert_error_mentions(read_idx_labels(&p), &p, &["truncated", "5 labels", "found 2"]);
    // Cut inside the header.
    let p = tmp.write("header.idx", &idx_images(0x803, 3, 28, 28, 0)[..10]);
    assert_error_mentions(read_idx_images(&p), &p, &["expected at least 16 bytes", "found 10"]);
}

#[test]
fn truncated_and_corrupt_gzip() {
    let tmp = TempDir::new("gzip");
    let full = gzip(&idx_images(0x803, 50, 28, 28, 50 * 784));
    let p = tmp.write("cut.gz", &full[..full.len() / 2]);
    assert_error_mentions(read_idx_images(&p), &p, &["gzip"]);
    let p = tmp.write("cut-trailer.gz", &full[..full.len() - 4]); // missing the size trailer
    assert_error_mentions(read_idx_images(&p), &p, &["gzip"]);
    let mut flipped = full.clone();
    let mid = flipped.len() / 2;
    flipped[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0x5a);
    let p = tmp.write("flipped.gz", flipped);
    assert_error_mentions(read_idx_images(&p), &p, &["gzip"]);
}

#[test]
fn empty_files() {
    let tmp = TempDir::new("empty");
    let p = tmp.write("images.idx", b"");
    assert_error_mentions(read_idx_images(&p), &p, &["empty"]);
    let p = tmp.write("labels.idx.gz", b"");
    assert_error_mentions(read_idx_labels(&p), &p, &["empty"]);
    let p = tmp.write("empty.gz", gzip(b""));
    assert_error_mentions(read_idx_labels(&p), &p, &["0 bytes"]);
    let p = tmp.write("train.csv", b"");
    assert_error_mentions(load_kaggle_csv(&p), &p, &["empty"]);
}

#[test]
fn missing_files() {
    let tmp = TempDir::new("missing");
    for name in &MNIST_FILES[..3] {
        tmp.write(name, b"not loaded: the check for missing files comes first");
    }
    let dir_name = tmp.0.file_name().unwrap().to_str().unwrap().to_string();
    let msg = load_mnist(&tmp.0).expect_err("a file is missing").to_string();
    assert!(msg.contains(&dir_name) && msg.contains("missing"), "{msg}");
    assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    for present in &MNIST_FILES[..3] {
        assert!(!msg.contains(present), "{present} is not missing: {msg}");
    }
    let empty = TempDir::new("missing-all");
    let msg = load_mnist(&empty.0).unwrap_err().to_string();
    assert!(MNIST_FILES.iter().all(|f| msg.contains(f)), "all four listed: {msg}");
    let nowhere = tmp.0.join("no-such-dir");
    assert_error_mentions(load_mnist(&nowhere), &nowhere, &["does not exist"]);
    let p = tmp.0.join("absent-images.idx");
    assert_error_mentions(read_idx_images(&p), &p, &[]);
}

#[test]
fn image_and_label_counts_must_match() {
    let tmp = TempDir::new("count");
    let images = tmp.write("imgs.idx", idx_images(0x803, 4, 2, 2, 16));
    let labels = tmp.write("labs.idx", idx_labels(5, &[0, 1, 2, 3, 4]));
    assert_error_mentions(
        load_idx_dataset(&images, &labels, 10),
        &labels,
        &["imgs.idx", "expected 4 labels, found 5"],
    );
    let labels = tmp.write("bad-label.idx", idx_labels(4, &[0, 1, 10, 3]));
    assert_error_mentions(
        load_idx_dataset(&images, &labels, 10),
        &labels,
        &["label #2", "is 10", "0..=9"],
    );
    assert!(load_idx_dataset(&images, &tmp.write("ok.idx", idx_labels(4, &[0, 1, 2, 3])), 10).is_ok());
}

fn header(labeled: bool) -> String {
    let names = (0..784).map(|i| format!("pixel{i}"));
    labeled
        .then(|| "label".to_string())
        .into_iter()
        .chain(names)
        .collect::<Vec<_>>()
        .join(",")
}

/// A labeled row with `pixels` pixel fields, all "0" except the overrides.
fn row(label: &str, pixels: usize, overrides: &[(usize, &str)]) -> String {
    let mut fields: Vec<String> = vec!["0".to_string(); pixels];
    for &(i, v) in overrides {
        fields[i] = v.to_string();
    }
    std::iter::once(label.to_string())
        .chain(fields)
        .collect::<Vec<_>>()
        .join(",")
}

fn write_csv(tmp: &TempDir, name: &str, rows: &[String]) -> PathBuf {
    tmp.write(name, format!("{}\n{}\n", header(true), rows.join("\n")))
}

#[test]
fn csv_wrong_column_count_on_line_3() {
    let tmp = TempDir::new("csv-cols");
    let p = write_csv(&tmp, "train.csv", &[row("1", 784, &[]), row("2", 783, &[])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &["train.csv:3", "expected 785", "found 784"]);
    // An unlabeled file with a labeled-looking row.
    let body = format!("{}\n{}\n", header(false), row("0", 784, &[]));
    let p = tmp.write("test.csv", body);
    assert_error_mentions(load_kaggle_csv(&p), &p, &["test.csv:2", "expected 784", "found 785"]);
}

#[test]
fn csv_non_numeric_pixel() {
    let tmp = TempDir::new("csv-nan");
    let p = write_csv(
        &tmp,
        "train.csv",
        &[row("1", 784, &[]), row("1", 784, &[]), row("4", 784, &[(5, "abc")])],
    );
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":4", "pixel5", "'abc'", "not an integer"]);
    let p = write_csv(&tmp, "frac.csv", &[row("1", 784, &[(0, "1.5")])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":2", "pixel0", "'1.5'"]);
    let p = write_csv(&tmp, "label.csv", &[row("seven", 784, &[])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":2", "label", "'seven'"]);
}

#[test]
fn csv_label_out_of_range() {
    let tmp = TempDir::new("csv-label");
    let p = write_csv(&tmp, "train.csv", &[row("9", 784, &[]), row("10", 784, &[])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":3", "label 10", "0..=9"]);
    let p = write_csv(&tmp, "neg.csv", &[row("-1", 784, &[])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":2", "label -1"]);
}

#[test]
fn csv_pixel_out_of_range() {
    let tmp = TempDir::new("csv-pixel");
    let p = write_csv(&tmp, "train.csv", &[row("3", 784, &[(783, "256")])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":2", "pixel783", "256", "0..=255"]);
    let p = write_csv(&tmp, "neg.csv", &[row("3", 784, &[(10, "-3")])]);
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":2", "pixel10", "-3"]);
}

#[test]
fn csv_missing_or_bad_header_and_no_rows() {
    let tmp = TempDir::new("csv-header");
    let p = tmp.write("train.csv", format!("{}\n{}\n", row("1", 784, &[]), row("2", 784, &[])));
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":1", "missing header"]);
    let p = tmp.write(
        "odd.csv",
        format!(
            "label,{}\n",
            (0..783).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(",")
        ),
    );
    assert_error_mentions(load_kaggle_csv(&p), &p, &[":1", "783 pixel columns", "not a square"]);
    let p = tmp.write("header-only.csv", format!("{}\n", header(true)));
    assert_error_mentions(load_kaggle_csv(&p), &p, &["no data rows"]);
    let p = tmp.0.join("absent.csv");
    assert_error_mentions(load_kaggle_csv(&p), &p, &[]);
}

#[test]
fn png_of_the_wrong_size() {
    let tmp = TempDir::new("png");
    let p = tmp.0.join("wide.png");
    save_png_gray(&p, &vec![128; 20 * 30], 20, 30).unwrap();
    assert_error_mentions(load_gray_image(&p, 28, 28), &p, &["20x30", "expected 28x28"]);
    let p = tmp.write("not-a-picture.png", b"this is text, not a PNG");
    assert_error_mentions(load_gray_image(&p, 28, 28), &p, &["decode"]);
    let p = tmp.0.join("absent.png");
    assert_error_mentions(load_gray_image(&p, 28, 28), &p, &[]);
    let e = save_png_gray(tmp.0.join("short.png"), &[0; 10], 28, 28)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("short.png") && e.contains("10 pixels") && e.contains("784"),
        "{e}"
    );
}
