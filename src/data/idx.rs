//! The IDX file format of the original MNIST distribution, gzip-compressed or raw.
//!
//! An IDX file is a tiny header followed by raw bytes, all integers big-endian `u32`:
//!
//! ```text
//! images (idx3): magic 0x00000803 | count | rows | cols | count*rows*cols pixels (u8, row-major)
//! labels (idx1): magic 0x00000801 | count | count labels (u8)
//! ```
//!
//! The magic's third byte (0x08) says "unsigned byte" and the fourth the number of dimensions.
//! Files are usually shipped gzip-compressed; we detect gzip by its magic bytes `1f 8b` rather than
//! by the `.gz` extension, so a renamed file still loads. Every check (magic, dimensions, data length
//! against the header, gzip integrity, image/label counts) reports the file and expected-vs-found.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::Dataset;
use crate::error::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// MNIST has ten digit classes.
pub const MNIST_CLASSES: usize = 10;

const IMAGES_HEADER_LEN: usize = 16;
const LABELS_HEADER_LEN: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The content of an IDX image file.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Read the file's bytes, transparently decompressing gzip (detected by the `1f 8b` magic).
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.is_empty() {
        return Err(Error::data(path, None, "file is empty (0 bytes)"));
    }
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| {
        Error::data(
            path,
            None,
            format!(
                "corrupt or truncated gzip data ({} compressed bytes, {} decompressed before the error): {e}",
                raw.len(),
                out.len()
            ),
        )
    })?;
    if out.is_empty() {
        return Err(Error::data(path, None, "gzip stream decompresses to 0 bytes"));
    }
    Ok(out)
}

/// Read an IDX image file (magic `0x00000803`), gzip-compressed or raw.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    parse_idx_images(path, &read_maybe_gzip(path)?)
}

/// Read an IDX label file (magic `0x00000801`), gzip-compressed or raw.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    parse_idx_labels(path, &read_maybe_gzip(path)?)
}

/// Parse the (decompressed) bytes of an IDX image file; `path` is only used in errors.
pub fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    check_header(path, bytes, IMAGES_MAGIC, IMAGES_HEADER_LEN)?;
    let count = be_u32(bytes, 4);
    let (rows, cols) = (be_u32(bytes, 8), be_u32(bytes, 12));
    if rows == 0 || cols == 0 {
        return Err(Error::data(
            path,
            None,
            format!("IDX image header has a zero dimension: {rows} rows x {cols} cols"),
        ));
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| {
            Error::data(
                path,
                None,
                format!("IDX image header is implausible: {count} images of {rows}x{cols} overflows"),
            )
        })?;
    let what = format!("{count} images of {rows}x{cols}");
    let pixels = payload(path, bytes, IMAGES_HEADER_LEN, expected, &what)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: pixels.to_vec(),
    })
}

/// Parse the (decompressed) bytes of an IDX label file; `path` is only used in errors.
pub fn parse_idx_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    check_header(path, bytes, LABELS_MAGIC, LABELS_HEADER_LEN)?;
    let count = be_u32(bytes, 4);
    let what = format!("{count} labels");
    Ok(payload(path, bytes, LABELS_HEADER_LEN, count, &what)?.to_vec())
}

/// Load an image file and its label file into one [`Dataset`] (1 channel), checking that the
/// counts agree and every label is `< num_classes`.
pub fn load_idx_dataset(images: &Path, labels: &Path, num_classes: usize) -> Result<Dataset> {
    let img = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if img.count != lab.len() {
        return Err(Error::data(
            labels,
            None,
            format!(
                "label count does not match the image file {}: expected {} labels, found {}",
                images.display(),
                img.count,
                lab.len()
            ),
        ));
    }
    if let Some((i, &l)) = lab.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(Error::data(
            labels,
            None,
            format!(
                "label #{i} (byte offset {}) is {l}, expected 0..={}",
                LABELS_HEADER_LEN + i,
                num_classes - 1
            ),
        ));
    }
    Dataset::new(img.pixels, Some(lab), [1, img.rows, img.cols], num_classes)
}

/// The four MNIST files, without their optional `.gz` suffix.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Load MNIST's `(train, test)` sets (60 000 and 10 000 images of 28x28) from `dir`.
///
/// Each of the four [`MNIST_FILES`] is looked up as `NAME.gz` first, then `NAME`; whichever is
/// found is read with gzip detection by content (when both exist, one line on stderr says which
/// is read). If any is missing, the error lists all of them.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
    let dir = dir.as_ref();
    let paths = find_mnist_files(dir, &MNIST_FILES, true)?;
    let [train_img, train_lab, test_img, test_lab] = [&paths[0], &paths[1], &paths[2], &paths[3]];
    let train = load_idx_dataset(train_img, train_lab, MNIST_CLASSES)?;
    let test = load_idx_dataset(test_img, test_lab, MNIST_CLASSES)?;
    if train.image_shape() != test.image_shape() {
        return Err(Error::data(
            test_img,
            None,
            format!(
                "test images are {}x{} but training images ({}) are {}x{}",
                test.height,
                test.width,
                train_img.display(),
                train.height,
                train.width
            ),
        ));
    }
    Ok((train, test))
}

/// Load only MNIST's test set (the two `t10k` files) from `dir`: what evaluation needs.
pub fn load_mnist_test(dir: impl AsRef<Path>) -> Result<Dataset> {
    let paths = find_mnist_files(dir.as_ref(), &MNIST_FILES[2..], true)?;
    load_idx_dataset(&paths[0], &paths[1], MNIST_CLASSES)
}

/// The paths of the four MNIST files in `dir` that [`load_mnist`] reads, in [`MNIST_FILES`] order.
pub fn mnist_paths(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    find_mnist_files(dir.as_ref(), &MNIST_FILES, false)
}

/// Resolve the paths of the named MNIST files, or report every missing one. With `announce`,
/// say on stderr which file is read where both `NAME.gz` and `NAME` exist.
fn find_mnist_files(dir: &Path, names: &[&str], announce: bool) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            None,
            "MNIST directory does not exist or is not a directory",
        ));
    }
    let found: Vec<Option<PathBuf>> = names.iter().map(|name| find_one(dir, name)).collect();
    let missing: Vec<String> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(name, _)| format!("{name}[.gz]"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::data(
            dir,
            None,
            format!(
                "missing MNIST file(s): {} (looked for NAME.gz, then NAME)",
                missing.join(", ")
            ),
        ));
    }
    let both: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| dir.join(name).is_file() && dir.join(format!("{name}.gz")).is_file())
        .collect();
    if announce && !both.is_empty() {
        errln!(
            "{}: both NAME.gz and NAME exist for {}: reading the .gz file{}",
            dir.display(),
            both.join(", "),
            if both.len() > 1 { "s" } else { "" }
        );
    }
    Ok(found.into_iter().flatten().collect())
}

fn find_one(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Check the magic number (first, so a wrong kind of file is named as such), then that the
/// header is complete.
fn check_header(path: &Path, bytes: &[u8], magic: u32, header_len: usize) -> Result<()> {
    let kind = if magic == IMAGES_MAGIC { "image" } else { "label" };
    if bytes.len() >= 4 {
        check_magic(path, be_u32(bytes, 0) as u32, magic, kind)?;
    }
    if bytes.len() < header_len {
        return Err(Error::data(
            path,
            None,
            format!(
                "too short for an IDX {kind} header: expected at least {header_len} bytes, found {}",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

fn check_magic(path: &Path, found: u32, expected: u32, kind: &str) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    let hint = match found {
        IMAGES_MAGIC => " (that is an IDX image file)",
        LABELS_MAGIC => " (that is an IDX label file)",
        _ => "",
    };
    Err(Error::data(
        path,
        None,
        format!("bad IDX {kind} magic: expected 0x{expected:08x}, found 0x{found:08x}{hint}"),
    ))
}

/// The `expected` data bytes after the header; an error if the file holds fewer or more.
fn payload<'a>(path: &Path, bytes: &'a [u8], header_len: usize, expected: usize, what: &str) -> Result<&'a [u8]> {
    let found = bytes.len() - header_len;
    if found != expected {
        let problem = if found < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(Error::data(
            path,
            None,
            format!(
                "{problem}: header says {what}, so expected {expected} data bytes after the {header_len}-byte header, found {found}"
            ),
        ));
    }
    Ok(&bytes[header_len..])
}

/// Big-endian `u32` at `offset` (the caller has checked the length).
fn be_u32(bytes: &[u8], offset: usize) -> usize {
    let b = [bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]];
    u32::from_be_bytes(b) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        std::iter::once(magic)
            .chain(dims.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect()
    }

    #[test]
    fn parses_a_tiny_image_file() {
        let mut bytes = header(IMAGES_MAGIC, &[2, 2, 3]);
        bytes.extend(0..12u8);
        let img = parse_idx_images(Path::new("x"), &bytes).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (2, 2, 3));
        assert_eq!(img.pixels, (0..12).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_wrong_magic_short_header_and_length_mismatch() {
        let p = Path::new("f.idx");
        let mut labels = header(LABELS_MAGIC, &[3]);
        labels.extend([1, 2, 3]);
        let e = parse_idx_images(p, &[labels.clone(), vec![0; 8]].concat()).unwrap_err();
        assert!(e.to_string().contains("expected 0x00000803, found 0x00000801"), "{e}");
        let e = parse_idx_labels(p, &labels[..5]).unwrap_err();
        assert!(e.to_string().contains("expected at least 8 bytes, found 5"), "{e}");
        let e = parse_idx_labels(p, &labels[..10]).unwrap_err();
        assert!(
            e.to_string().contains("truncated") && e.to_string().contains("3 data bytes"),
            "{e}"
        );
        let e = parse_idx_labels(p, &[labels.clone(), vec![9]].concat()).unwrap_err();
        assert!(e.to_string().contains("trailing bytes"), "{e}");
        let e = parse_idx_images(p, &header(IMAGES_MAGIC, &[1, 0, 28])).unwrap_err();
        assert!(e.to_string().contains("zero dimension"), "{e}");
        assert_eq!(parse_idx_labels(p, &labels).unwrap(), vec![1, 2, 3]);
    }
}
