//! The data module against the real MNIST files in `data/mnist` and valid small inputs:
//! counts, shapes and class counts as listed in `data/mnist/README.md`, gzip or raw files,
//! the split, Kaggle CSVs and PNG round trips.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vitcore::data::csv::load_kaggle_csv;
use vitcore::data::idx::MNIST_FILES;
use vitcore::data::image::{load_gray_image, save_png_gray};
use vitcore::data::{load_mnist, BatchLoader, Dataset, LoaderConfig, Transform};

const TRAIN_COUNTS: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const TEST_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

fn mnist_dir() -> PathBuf {
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    Path::new(&root).join("data").join("mnist")
}

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
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn real_mnist_has_the_documented_counts_shapes_and_classes() {
    let (train, test) = load_mnist(mnist_dir()).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    for d in [&train, &test] {
        assert_eq!(d.image_shape(), [1, 28, 28]);
        assert_eq!(d.num_classes, 10);
        assert_eq!(d.images.len(), d.len() * 784);
    }
    assert_eq!(train.class_counts(), TRAIN_COUNTS);
    assert_eq!(test.class_counts(), TEST_COUNTS);
    // The well-known first digits: a 5 in train, a 7 in t10k.
    assert_eq!((train.label(0), test.label(0)), (Some(5), Some(7)));
    // Real digits: black border, some full-ink pixels, roughly 19% ink on average.
    let first = train.image(0);
    assert!(first[..28].iter().all(|&p| p == 0), "top row of a digit is background");
    assert_eq!(*first.iter().max().unwrap(), 255);
    let ink = train.images.iter().filter(|&&p| p > 0).count() as f64 / train.images.len() as f64;
    assert!((0.15..0.25).contains(&ink), "fraction of non-zero pixels {ink}");
}

#[test]
fn raw_uncompressed_files_load_identically() {
    let tmp = TempDir::new("raw");
    for name in MNIST_FILES {
        let gz = fs::read(mnist_dir().join(format!("{name}.gz"))).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        assert_ne!(raw[..2], [0x1f, 0x8b]);
        fs::write(tmp.0.join(name), raw).unwrap();
    }
    assert_eq!(load_mnist(&tmp.0).unwrap(), load_mnist(mnist_dir()).unwrap());
}

#[test]
fn gzip_is_detected_by_content_not_by_extension() {
    let tmp = TempDir::new("renamed");
    for name in MNIST_FILES {
        // gzip bytes under the raw name (no .gz suffix)
        fs::copy(mnist_dir().join(format!("{name}.gz")), tmp.0.join(name)).unwrap();
    }
    let (train, test) = load_mnist(&tmp.0).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(test.class_counts(), TEST_COUNTS);
}

#[test]
fn split_of_real_mnist_partitions_it() {
    let (train, _) = load_mnist(mnist_dir()).unwrap();
    let (tr, va) = train.split(0.1, 42).unwrap();
    assert_eq!((tr.len(), va.len()), (54_000, 6_000));
    let summed: Vec<usize> = tr
        .class_counts()
        .iter()
        .zip(va.class_counts())
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(summed, TRAIN_COUNTS);
    // Shuffled, not stratified, but every class is present in a 6000-image sample.
    assert!(
        va.class_counts().iter().all(|&c| c > 450 && c < 750),
        "{:?}",
        va.class_counts()
    );
    assert_eq!(train.split(0.1, 42).unwrap().1, va, "same seed, same split");
}

#[test]
fn loader_over_real_test_set_yields_every_image_normalised() {
    let (_, test) = load_mnist(mnist_dir()).unwrap();
    let test = Arc::new(test);
    let loader = BatchLoader::new(test.clone(), LoaderConfig::eval(256)).unwrap();
    assert_eq!(loader.num_batches(), 40);
    let mut labels = Vec::new();
    for batch in loader {
        assert_eq!(&batch.shape[1..], &[1, 28, 28]);
        assert!(batch.images.iter().all(|&x| (-1.0..=1.0).contains(&x)));
        labels.extend(batch.labels);
    }
    assert_eq!(labels.len(), 10_000);
    let expected: Vec<u32> = test.labels.as_ref().unwrap().iter().map(|&l| l as u32).collect();
    assert_eq!(labels, expected, "eval loader keeps dataset order");
}

fn csv_row(label: Option<u8>, pixel: impl Fn(usize) -> u8) -> String {
    let pixels = (0..784).map(|i| pixel(i).to_string());
    label
        .map(|l| l.to_string())
        .into_iter()
        .chain(pixels)
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_header(labeled: bool) -> String {
    let names = (0..784).map(|i| format!("pixel{i}"));
    labeled
        .then(|| "label".to_string())
        .into_iter()
        .chain(names)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn kaggle_train_and_test_csvs_load() {
    let tmp = TempDir::new("csv-ok");
    let train = tmp.0.join("train.csv");
    let rows: Vec<String> = (0..3)
        .map(|r| csv_row(Some(r as u8 * 3), |i| ((i + r) % 256) as u8))
        .collect();
    fs::write(&train, format!("{}\r\n{}\r\n", csv_header(true), rows.join("\r\n"))).unwrap();
    let d = load_kaggle_csv(&train).unwrap();
    assert_eq!((d.len(), d.image_shape()), (3, [1, 28, 28]));
    assert_eq!(d.labels, Some(vec![0, 3, 6]));
    assert_eq!(d.image(2)[..3], [2, 3, 4]);
    assert_eq!(d.image(1)[783], ((783 + 1) % 256) as u8);

    let test = tmp.0.join("test.csv");
    let rows: Vec<String> = (0..2).map(|_| csv_row(None, |i| (i % 200) as u8)).collect();
    fs::write(&test, format!("{}\n{}\n", csv_header(false), rows.join("\n"))).unwrap();
    let d: Dataset = load_kaggle_csv(&test).unwrap();
    assert_eq!((d.len(), d.labels.clone()), (2, None));
    assert_eq!(d.image(1)[199..202], [199, 0, 1]);
}

#[test]
fn png_round_trip() {
    let tmp = TempDir::new("png-ok");
    let path = tmp.0.join("digit.png");
    let pixels: Vec<u8> = (0..784).map(|i| (i * 3 % 256) as u8).collect();
    save_png_gray(&path, &pixels, 28, 28).unwrap();
    assert_eq!(load_gray_image(&path, 28, 28).unwrap(), pixels);
}

/// Pillow's `Image.rotate(angle, NEAREST, translate=(tx, ty), fillcolor=0)` of training image 0
/// (the "5"), one row of hex bytes per line: what torchvision's `RandomRotation` produces on PIL
/// images. Generated once with Pillow 13.
const PIL_ROTATE_15: [&str; 28] = [
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000fff7f77f000000000000",
    "00000000000000000000000000000088af1aa6f2c340000000000000",
    "00000000000000000000001212127efde1acfd382700000000000000",
    "0000000000000000000003fdfdfdfdfb5d5252000000000000000000",
    "00000000000000245e9aaafdfdfdfdf1000000000000000000000000",
    "0000000000001efdfdfdfdfdfdc6b62b9a0000000000000000000000",
    "00000000000031eefdfdfdfdcd0b0000000000000000000000000000",
    "00000000000012db9c6bfdfd5a000000000000000000000000000000",
    "00000000000000500e019afdbe020000000000000000000000000000",
    "000000000000000000008b8bbefd46006c0100000000000000000000",
    "00000000000000000000000b23f1e1a0fd7719000000000000000000",
    "0000000000000000000000000051f0fdfdfd961b0000000000000000",
    "00000000000000000000000000002dba5d5dfcfdf940000000000000",
    "000000000000000000000000000000000000f9fdcf02000000000000",
    "0000000000000000000000000000000082b7fdfdb600000000000000",
    "0000000000000000000000000000002e82fdfdfa0000000000000000",
    "000000000000000000000000002794e5e5fdfdc94e00000000000000",
    "0000000000000000000000000072ddfdfdc651020000000000000000",
    "00000000000000000000000018fdfdfdfd0900000000000000000000",
    "000000000000000000001742d5fdfdc3500000000000000000000000",
    "000000000000000000abdbfdfdf485850b0000000000000000000000",
    "00000000000000000012fdfdfd841000000000000000000000000000",
    "0000000000000037ace2fdd487840000000000000000000000000000",
    "0000000000000088fdfd000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
];
const PIL_ROTATE_MINUS_10_SHIFT_1_MINUS_2: [&str; 28] = [
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "000000000000000000001e245e000312121212000000000000000000",
    "00000000000000000031eefdfd9aaafdfdfdfd88af1aa6ff00000000",
    "00000000000000000012dbfdfdfdfdfdfdfdfdfde1acfdf2f77f0000",
    "00000000000000000000509c6bfdfdfdc6b6fdfb5d525238c3400000",
    "00000000000000000000000e01fdfdcd0b00f7f10000000027000000",
    "000000000000000000000000019afd5a00002b9a0000000000000000",
    "0000000000000000000000008bfdbe02000000000000000000000000",
    "0000000000000000000000000bbefd46000000000000000000000000",
    "0000000000000000000000000023f1e1a06c00000000000000000000",
    "000000000000000000000000000051f0fdfd01000000000000000000",
    "0000000000000000000000000000002dbafd77190000000000000000",
    "00000000000000000000000000000000105dfd961b00000000000000",
    "0000000000000000000000000000000000f9fdbb0000000000000000",
    "00000000000000000000000000002e82b7f9fdf94000000000000000",
    "0000000000000000000018722794e5fdfdfdfdcf0200000000000000",
    "00000000000000001742d5fdddfdfdfdfdfdfab60000000000000000",
    "0000000037ac12abdbfdfdfdfdfdfdc651c94e000000000000000000",
    "00000088fdfdfdfdfdfdf4fdc3c35009000200000000000000000000",
    "000000000000fdd4878410850b000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
];

fn from_hex_rows(rows: &[&str; 28]) -> Vec<u8> {
    let hex = rows.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rotation_matches_pillow_on_a_real_digit() {
    let images = vitcore::data::read_idx_images(mnist_dir().join("train-images-idx3-ubyte.gz")).unwrap();
    let five = &images.pixels[..784];
    let cases = [
        (15.0, 0.0, 0.0, &PIL_ROTATE_15),
        (-10.0, 1.0, -2.0, &PIL_ROTATE_MINUS_10_SHIFT_1_MINUS_2),
    ];
    for (angle_deg, shift_x, shift_y, expected) in cases {
        let t = Transform {
            angle_deg,
            shift_x,
            shift_y,
            ..Transform::identity()
        };
        let got = t.warp_u8(five, [1, 28, 28], 0);
        assert_eq!(got, from_hex_rows(expected), "{t:?}");
    }
}
