//! Single image files: load one PNG as grayscale for prediction, save one for debugging.
//!
//! [`load_gray_image`] reads any format the `image` crate was built with (here: PNG), detected by
//! content, converts it to 8-bit grayscale (`image`'s luma: 0.2126 R + 0.7152 G + 0.0722 B; alpha
//! is dropped) and insists on the size the model expects. It never resizes: a silently rescaled
//! digit would give a confident but meaningless prediction, so a wrong size is an error naming the
//! file and both sizes. Like MNIST, the model expects a light digit on a dark background
//! (0 = background); invert a dark-on-light scan before predicting.

use std::path::Path;

use ::image::{ImageError, ImageReader};

use super::Dataset;
use crate::error::{Error, Result};

/// Load one image as `height * width` grayscale bytes (row-major), checking its size.
pub fn load_gray_image(path: impl AsRef<Path>, height: usize, width: usize) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let decoded = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| image_error(path, e))?;
    let gray = decoded.to_luma8();
    let (found_w, found_h) = (gray.width() as usize, gray.height() as usize);
    if (found_h, found_w) != (height, width) {
        return Err(Error::data(
            path,
            None,
            format!(
                "image is {found_w}x{found_h} (width x height), expected {width}x{height}; \
                 resize it to {width}x{height} first (no automatic resizing)"
            ),
        ));
    }
    Ok(gray.into_raw())
}

/// Load one image as a one-image, unlabeled [`Dataset`] (1 channel) ready for the loader.
pub fn load_gray_image_dataset(
    path: impl AsRef<Path>,
    height: usize,
    width: usize,
    num_classes: usize,
) -> Result<Dataset> {
    let pixels = load_gray_image(path, height, width)?;
    Dataset::new(pixels, None, [1, height, width], num_classes)
}

/// Save `width * height` grayscale bytes (row-major) as an 8-bit PNG.
pub fn save_png_gray(path: impl AsRef<Path>, pixels: &[u8], width: usize, height: usize) -> Result<()> {
    let path = path.as_ref();
    if pixels.len() != width * height {
        return Err(Error::config(format!(
            "save_png_gray {}: {} pixels given for a {width}x{height} image (expected {})",
            path.display(),
            pixels.len(),
            width * height
        )));
    }
    let (w, h) = (dim_u32(path, width)?, dim_u32(path, height)?);
    ::image::save_buffer_with_format(
        path,
        pixels,
        w,
        h,
        ::image::ExtendedColorType::L8,
        ::image::ImageFormat::Png,
    )
    .map_err(|e| image_error(path, e))
}

fn dim_u32(path: &Path, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::config(format!("save_png_gray {}: dimension {n} is too large", path.display())))
}

/// I/O failures stay I/O errors; anything else (unknown format, corrupt data) is a data error.
fn image_error(path: &Path, e: ImageError) -> Error {
    match e {
        ImageError::IoError(io) => Error::io(path, io),
        other => Error::data(path, None, format!("cannot decode or encode image: {other}")),
    }
}
