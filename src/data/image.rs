//! Single image files: read one digit for prediction as a person sees it, save one for debugging.
//!
//! The model expects what MNIST holds: one 8-bit gray channel, a **light digit on a dark
//! background** (0 = background, 255 = ink), at exactly the model's size (28x28 for MNIST). Real
//! images rarely come like that, so [`load_digit_image`] turns what a person sees into that form:
//!
//! 1. **Colour and depth**: RGB becomes gray by `image`'s luma (0.2126 R + 0.7152 G + 0.0722 B);
//!    16-bit channels become 8-bit.
//! 2. **Transparency**: an image with transparent pixels is not read by its colour channels alone
//!    (an HTML canvas export keeps the stroke only in alpha: RGB is 0 everywhere):
//!    - if every visible pixel has (nearly) one colour, the drawing *is* the alpha channel: ink =
//!      alpha, whatever the colour;
//!    - else, if the opaque pixels cover less than half the image, they are the drawing: it is
//!      flattened onto black (light drawing) or white (dark drawing);
//!    - else the opaque pixels are paper with transparent parts: it is flattened onto the paper's
//!      colour (the median of the opaque pixels).
//! 3. **Polarity**: a digit's background is most of its pixels, so a median above 127 means a
//!    dark digit on light paper (a scan, a drawing in a paint program): it is inverted, unless
//!    [`DigitOptions::auto_invert`] is off (`predict --no-auto-invert`).
//! 4. **Blank**: an image whose pixels all lie within [`BLANK_RANGE`] of each other after this
//!    has nothing to predict: an error, not a confident guess.
//!
//! Every step that changed the image is listed in [`DigitImage::notes`] (`predict` prints them in
//! one line on stderr). It never resizes: a silently rescaled digit would give a confident but
//! meaningless prediction, so a wrong size is an error naming the file and both sizes.

use std::path::Path;

use ::image::{DynamicImage, ImageError, ImageReader};

use super::Dataset;
use crate::error::{Error, Result};

/// An image whose pixels all lie within this many gray levels of each other is blank.
pub const BLANK_RANGE: u8 = 12;

/// How [`load_digit_image`] may transform an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitOptions {
    /// Invert an image whose background looks light (median pixel above 127).
    pub auto_invert: bool,
}

impl Default for DigitOptions {
    fn default() -> Self {
        DigitOptions { auto_invert: true }
    }
}

/// One image in the model's form, and what was done to get it there.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitImage {
    /// `height * width` gray bytes, row-major, light digit on a dark background.
    pub pixels: Vec<u8>,
    /// The transformations applied, each a short phrase ("inverted it ..."); empty if none.
    pub notes: Vec<String>,
}

/// Load one image for prediction, as a person sees it (see the module documentation).
///
/// Errors name the file: unreadable or undecodable, a size other than `width x height`, blank.
pub fn load_digit_image(path: impl AsRef<Path>, height: usize, width: usize, opts: DigitOptions) -> Result<DigitImage> {
    let path = path.as_ref();
    let (mut pixels, mut notes) = decode_gray(path, height, width)?;
    let (lo, hi) = pixels
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    if hi - lo <= BLANK_RANGE {
        let how = match notes.is_empty() {
            true => String::new(),
            false => format!(" (after: {})", notes.join("; ")),
        };
        return Err(Error::data(
            path,
            None,
            format!("the image is blank{how}: every pixel is between {lo} and {hi} (of 0..=255), so there is no digit to predict"),
        ));
    }
    let median = median(&pixels);
    if median > 127 {
        if opts.auto_invert {
            pixels.iter_mut().for_each(|p| *p = 255 - *p);
            notes.push(format!(
                "inverted it: its background is light (median pixel {median}) and the model expects a light digit \
                 on a dark background (--no-auto-invert keeps it as it is)"
            ));
        } else {
            notes.push(format!(
                "kept it as it is (--no-auto-invert) although its background looks light (median pixel {median}): \
                 the model expects a light digit on a dark background"
            ));
        }
    }
    Ok(DigitImage { pixels, notes })
}

/// Load one image as `height * width` gray bytes (row-major), checking its size: colour, depth
/// and transparency are converted as [`load_digit_image`] does, but the polarity is kept and a
/// blank image is not an error.
pub fn load_gray_image(path: impl AsRef<Path>, height: usize, width: usize) -> Result<Vec<u8>> {
    Ok(decode_gray(path.as_ref(), height, width)?.0)
}

/// Load one image for prediction as a one-image, unlabeled [`Dataset`] (1 channel), with the
/// notes of [`load_digit_image`].
pub fn load_digit_dataset(
    path: impl AsRef<Path>,
    height: usize,
    width: usize,
    num_classes: usize,
    opts: DigitOptions,
) -> Result<(Dataset, Vec<String>)> {
    let img = load_digit_image(path, height, width, opts)?;
    Ok((
        Dataset::new(img.pixels, None, [1, height, width], num_classes)?,
        img.notes,
    ))
}

/// Decode, check the size, and convert to 8-bit gray (steps 1 and 2 of the module documentation).
fn decode_gray(path: &Path, height: usize, width: usize) -> Result<(Vec<u8>, Vec<String>)> {
    let decoded = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| image_error(path, e))?;
    let (found_w, found_h) = (decoded.width() as usize, decoded.height() as usize);
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
    Ok(to_gray(&decoded))
}

/// The pixels as 8-bit gray, and the notes on what that took.
fn to_gray(img: &DynamicImage) -> (Vec<u8>, Vec<String>) {
    let color = img.color();
    let mut notes = Vec::new();
    let bits = 8 * color.bytes_per_pixel() as usize / color.channel_count() as usize;
    // f32 in [0, 1] keeps 16-bit precision until the one rounding at the end.
    let la = img.to_luma_alpha32f();
    let (luma, alpha): (Vec<f32>, Vec<f32>) = la.pixels().map(|p| (p.0[0], p.0[1])).unzip();
    let (gray, alpha_note) = match color.has_alpha() && alpha.iter().any(|&a| a < 254.5 / 255.0) {
        false => (luma, None),
        true => {
            let (gray, how) = flatten_alpha(&luma, &alpha);
            (gray, Some(how))
        }
    };
    // Colour is worth a note only where it is visible and was not set aside as the ink's colour.
    let ink_from_alpha = alpha_note.as_ref().is_some_and(|n| n.contains(ALPHA_INK));
    if color.has_color() && !ink_from_alpha && has_visible_colour(img) {
        notes.push(format!("converted {bits}-bit colour to gray"));
    } else if bits != 8 {
        notes.push(format!(
            "converted {bits}-bit {} to 8-bit gray",
            if color.has_color() { "colour" } else { "gray" }
        ));
    }
    notes.extend(alpha_note);
    let bytes = gray
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    (bytes, notes)
}

/// Gray values of an image with transparency (step 2 of the module documentation), and a note.
fn flatten_alpha(luma: &[f32], alpha: &[f32]) -> (Vec<f32>, String) {
    // "Visible" for the one-colour test: anything not (nearly) fully transparent.
    let visible: Vec<f32> = luma
        .iter()
        .zip(alpha)
        .filter(|(_, &a)| a > 0.1)
        .map(|(&l, _)| l)
        .collect();
    let (lo, hi) = visible.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &l| {
        (lo.min(l), hi.max(l))
    });
    if visible.is_empty() || hi - lo <= 0.1 {
        let how = format!("{ALPHA_INK} (a drawing in one colour on a transparent background)");
        return (alpha.to_vec(), how);
    }
    let opaque: Vec<f32> = luma
        .iter()
        .zip(alpha)
        .filter(|(_, &a)| a >= 0.5)
        .map(|(&l, _)| l)
        .collect();
    let (background, name) = if opaque.len() * 2 < luma.len() {
        // The opaque pixels are the drawing: put it on the background that contrasts with it.
        match median_f32(&opaque) >= 0.5 {
            true => (0.0, "black".to_string()),
            false => (1.0, "white".to_string()),
        }
    } else {
        // The opaque pixels are mostly paper: fill the transparent parts with the paper's colour.
        let paper = median_f32(&opaque);
        (
            paper,
            format!("the colour of its opaque part (gray {})", (paper * 255.0).round()),
        )
    };
    let gray = luma
        .iter()
        .zip(alpha)
        .map(|(&l, &a)| l * a + background * (1.0 - a))
        .collect();
    (gray, format!("flattened its transparent parts onto {name}"))
}

/// The note of a drawing taken from the alpha channel.
const ALPHA_INK: &str = "took the ink from the alpha channel";

/// Whether some pixel that is not transparent has channels that differ (a colour, not a gray).
fn has_visible_colour(img: &DynamicImage) -> bool {
    img.to_rgba32f()
        .pixels()
        .any(|p| p.0[3] > 0.1 && (p.0[0] - p.0[1]).abs().max((p.0[1] - p.0[2]).abs()) > 0.5 / 255.0)
}

fn median(pixels: &[u8]) -> u8 {
    let mut counts = [0usize; 256];
    pixels.iter().for_each(|&p| counts[p as usize] += 1);
    let half = pixels.len().div_ceil(2);
    let mut seen = 0;
    (0..=255u8)
        .find(|&v| {
            seen += counts[v as usize];
            seen >= half
        })
        .unwrap_or(0)
}

fn median_f32(values: &[f32]) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{GrayAlphaImage, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};

    const W: u32 = 8;

    /// An 8x8 "digit": a light bar on black, 0 = background.
    fn digit() -> Vec<u8> {
        (0..W * W)
            .map(|i| match (i % W, i / W) {
                (3..=4, 1..=6) => 250,
                (2, 1..=6) => 90,
                _ => 0,
            })
            .collect()
    }

    fn gray(pixels: &[u8]) -> DynamicImage {
        DynamicImage::ImageLuma8(ImageBuffer::from_raw(W, W, pixels.to_vec()).unwrap())
    }

    fn px(i: u32) -> u8 {
        digit()[i as usize]
    }

    fn convert(img: &DynamicImage) -> (Vec<u8>, Vec<String>) {
        to_gray(img)
    }

    #[test]
    fn every_form_of_the_same_digit_converts_to_the_same_pixels() {
        let d = digit();
        let at = |x: u32, y: u32| px(y * W + x);
        let forms: Vec<(&str, DynamicImage, &str)> = vec![
            ("gray", gray(&d), ""),
            (
                "rgb with equal channels",
                DynamicImage::ImageRgb8(ImageBuffer::from_fn(W, W, |x, y| Rgb([at(x, y); 3]))),
                "",
            ),
            (
                "16-bit rgb",
                DynamicImage::ImageRgb16(ImageBuffer::from_fn(W, W, |x, y| Rgb([at(x, y) as u16 * 257; 3]))),
                "16-bit colour to 8-bit gray",
            ),
            (
                "16-bit gray",
                DynamicImage::ImageLuma16(ImageBuffer::from_fn(W, W, |x, y| Luma([at(x, y) as u16 * 257]))),
                "16-bit",
            ),
            (
                "canvas: black ink only in alpha",
                DynamicImage::ImageRgba8(RgbaImage::from_fn(W, W, |x, y| Rgba([0, 0, 0, at(x, y)]))),
                "alpha",
            ),
            (
                "red ink only in alpha",
                DynamicImage::ImageRgba8(RgbaImage::from_fn(W, W, |x, y| Rgba([210, 30, 40, at(x, y)]))),
                "alpha",
            ),
            (
                "gray+alpha",
                DynamicImage::ImageLumaA8(GrayAlphaImage::from_fn(W, W, |x, y| LumaA([255, at(x, y)]))),
                "alpha",
            ),
            (
                "opaque light drawing on a transparent background",
                DynamicImage::ImageRgba8(RgbaImage::from_fn(W, W, |x, y| match at(x, y) {
                    0 => Rgba([77, 77, 77, 0]),
                    v => Rgba([v, v, v, 255]),
                })),
                "black",
            ),
        ];
        for (what, img, says) in forms {
            let (got, notes) = convert(&img);
            assert_eq!(got, d, "{what}");
            assert!(notes.join(" ").contains(says), "{what}: {notes:?}");
            assert_eq!(notes.is_empty(), says.is_empty(), "{what}: {notes:?}");
        }
    }

    #[test]
    fn real_colour_is_noted() {
        // A green digit: gray by luma, and said so.
        let img = RgbaImage::from_fn(W, W, |x, y| Rgba([0, px(y * W + x), 0, 255]));
        let (got, notes) = convert(&DynamicImage::ImageRgba8(img));
        let want: Vec<u8> = digit().iter().map(|&p| (p as f32 * 0.7152).round() as u8).collect();
        assert_eq!(got, want);
        assert_eq!(notes, ["converted 8-bit colour to gray"]);
    }

    #[test]
    fn dark_ink_on_paper_with_transparent_margins_is_flattened_onto_the_paper() {
        // White paper (opaque) with a dark digit, and a transparent 1-pixel margin.
        let img = RgbaImage::from_fn(W, W, |x, y| {
            let margin = x == 0 || y == 0 || x == W - 1 || y == W - 1;
            let v = 255 - px(y * W + x);
            Rgba([v, v, v, if margin { 0 } else { 255 }])
        });
        let (got, notes) = convert(&DynamicImage::ImageRgba8(img));
        let want: Vec<u8> = digit().iter().map(|p| 255 - p).collect();
        assert_eq!(got, want);
        assert!(notes[0].contains("gray 255"), "{notes:?}");
    }

    #[test]
    fn median_and_blank_thresholds() {
        assert_eq!(median(&[0, 0, 0, 200, 255]), 0);
        assert_eq!(median(&[0, 200, 201, 255]), 200);
        assert_eq!(median(&[9]), 9);
    }
}
