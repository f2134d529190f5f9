//! One image to look at: a PNG file, or row N of a Kaggle-style CSV (`--index N`).

use crate::data::image::{load_digit_image, load_gray_image, DigitOptions};
use crate::error::{Error, Result};
use crate::fsutil::file_name;
use std::path::{Path, PathBuf};

/// One gray image, `height × width` bytes, row-major.
#[derive(Clone, Debug)]
pub struct InputImage {
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    /// Its label, when a labelled CSV gave one.
    pub label: Option<u8>,
    /// The file it came from (for errors).
    pub path: PathBuf,
    /// How to name it in a picture: the file's name, and the row for a CSV.
    pub name: String,
    /// What was done to the image to read it (see `data::image`), each a short phrase.
    pub notes: Vec<String>,
}

fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Row `index` (0 = the first image) of a CSV.
fn csv_row(path: &Path, index: Option<usize>) -> Result<InputImage> {
    let Some(i) = index else {
        return Err(Error::data(
            path,
            None,
            "a CSV holds many images: say which with --index N (0 = the first)",
        ));
    };
    let ds = crate::data::csv::load_kaggle_csv(path)?;
    if i >= ds.len() {
        return Err(Error::data(
            path,
            None,
            format!(
                "--index {i} is past the end: the file has {} images (indices 0 to {})",
                ds.len(),
                ds.len().saturating_sub(1)
            ),
        ));
    }
    Ok(InputImage {
        pixels: ds.image(i).to_vec(),
        height: ds.height,
        width: ds.width,
        label: ds.label(i),
        path: path.to_path_buf(),
        name: format!("{} row {i}", file_name(path)),
        notes: Vec::new(),
    })
}

fn no_index_for_png(path: &Path, index: Option<usize>) -> Result<()> {
    match index {
        Some(_) => Err(Error::data(
            path,
            None,
            "--index picks a row of a CSV; this is one image",
        )),
        None => Ok(()),
    }
}

/// Any image as it is (gray, any size): for `show patches`.
pub fn load_any(path: &Path, index: Option<usize>) -> Result<InputImage> {
    if is_csv(path) {
        return csv_row(path, index);
    }
    no_index_for_png(path, index)?;
    let (w, h) = ::image::image_dimensions(path).map_err(|e| match e {
        ::image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::data(path, None, format!("not a readable image: {other}")),
    })?;
    Ok(InputImage {
        pixels: load_gray_image(path, h as usize, w as usize)?,
        height: h as usize,
        width: w as usize,
        label: None,
        path: path.to_path_buf(),
        name: file_name(path),
        notes: Vec::new(),
    })
}

/// An image for a model of `channels × height × width`, read as `predict` reads one (a PNG as a
/// person sees it, see `data::image`; a CSV row as it is). Errors name the file: a size or
/// channel count the model cannot take, a row past the end, a blank image.
pub fn load_for_model(path: &Path, index: Option<usize>, [channels, height, width]: [usize; 3]) -> Result<InputImage> {
    if channels != 1 {
        return Err(Error::data(
            path,
            None,
            format!("the model takes {channels}-channel images; vitcore reads one-channel (gray) images only"),
        ));
    }
    let img = if is_csv(path) {
        csv_row(path, index)?
    } else {
        no_index_for_png(path, index)?;
        let d = load_digit_image(path, height, width, DigitOptions::default())?;
        InputImage {
            pixels: d.pixels,
            height,
            width,
            label: None,
            path: path.to_path_buf(),
            name: file_name(path),
            notes: d.notes,
        }
    };
    if (img.height, img.width) != (height, width) {
        return Err(Error::data(
            path,
            None,
            format!(
                "images are {}x{} but the model expects {width}x{height} (width x height)",
                img.width, img.height
            ),
        ));
    }
    Ok(img)
}
