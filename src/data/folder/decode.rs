//! One photo file to the model's input: decode (JPEG or PNG, any size and mode), turn upright by
//! its EXIF orientation, convert to the model's channels, resize to the model's size.
//!
//! - **Formats**: JPEG (baseline and progressive, gray, YCbCr, CMYK/YCCK: zune-jpeg converts
//!   CMYK to RGB) and PNG (gray, gray+alpha, RGB, RGBA, palette; 8 or 16 bits), by content, not
//!   by the file name's extension.
//! - **Orientation**: a camera stores a portrait photo as landscape pixels plus an EXIF tag
//!   saying how to turn them; every viewer applies it, so it is applied here
//!   (`ImageDecoder::orientation`, which reads JPEG's APP1 and PNG's eXIf chunk).
//! - **Channels**: 3 channels take RGB (gray is repeated into all three), 1 channel takes luma
//!   (ITU-R BT.709 weights, `image`'s `to_luma8`); alpha is dropped, as torchvision's default
//!   loader does (`PIL.Image.convert("RGB")`); 16-bit channels become 8-bit.
//! - **Size**: [`ResizeMode::Stretch`] resizes the whole image to `size × size`, ignoring its
//!   aspect ratio, as the Keras flowers write-up does (`cv2.resize(image, (200, 200))`);
//!   [`ResizeMode::Crop`] scales the short side to `size` and keeps the centre square
//!   (torchvision's `Resize(size)` + `CenterCrop(size)` with an equal crop: nothing is
//!   distorted, the edges of the long side are lost). Both filter with a triangle (bilinear)
//!   kernel widened when shrinking, as PIL's `BILINEAR` does, so a large photo is averaged
//!   rather than point-sampled (OpenCV's `INTER_LINEAR` reads only 2×2 pixels and aliases).
//! - **Truncation**: the JPEG decoder is lenient and fills a truncated scan with gray, so a
//!   JPEG whose last scan has no end-of-image marker after it is refused here (the marker
//!   `FF D9` cannot occur inside entropy-coded data, where `FF` is always followed by `00` or a
//!   restart marker). A truncated PNG fails in the decoder itself.

use std::io::Cursor;
use std::path::Path;

use ::image::imageops::FilterType;
use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How an image of another size or shape becomes the model's `size × size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Resize the whole image to `size × size` (the aspect ratio is lost).
    #[default]
    Stretch,
    /// Scale the short side to `size`, then cut the centre `size × size`.
    Crop,
}

/// What the model takes: `channels` (1 or 3) of `size × size` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoShape {
    pub size: usize,
    pub channels: usize,
    pub resize: ResizeMode,
}

/// A decoded photo, upright, before resizing: its size and what was done to it.
pub struct Decoded {
    pub image: DynamicImage,
    /// The EXIF orientation applied (`None` when the file has none or it is upright).
    pub orientation: Option<String>,
}

/// Decode one image file by its content (JPEG or PNG) and apply its EXIF orientation.
///
/// Errors name the file: unreadable, not a JPEG or PNG, corrupt, truncated.
pub fn decode(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, &bytes)
}

/// [`decode`] from bytes already read (`path` names them in errors).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<Decoded> {
    let bad = |msg: String| Error::data(path, None, msg);
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg) => check_jpeg_complete(bytes).map_err(bad)?,
        Some(ImageFormat::Png) => {}
        Some(other) => return Err(bad(format!("is a {other:?} image; only JPEG and PNG are read"))),
        None => return Err(bad("is not a JPEG or PNG image (its first bytes match neither)".into())),
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| bad(format!("is not a readable image: {e}")))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| bad(format!("has unreadable EXIF metadata: {e}")))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("is corrupt or truncated: {e}")))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(bad(format!("has no pixels ({}x{})", image.width(), image.height())));
    }
    let applied = (orientation != ::image::metadata::Orientation::NoTransforms).then(|| format!("{orientation:?}"));
    image.apply_orientation(orientation);
    Ok(Decoded {
        image,
        orientation: applied,
    })
}

/// A JPEG is complete when an end-of-image marker follows its last start-of-scan marker.
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (None, _) => Err("is a JPEG without image data (no start-of-scan marker): truncated or corrupt".into()),
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        _ => Err(format!(
            "is a truncated JPEG: its image data stops after {} bytes with no end-of-image marker",
            bytes.len()
        )),
    }
}

/// The model's input from a decoded image: `channels × size × size` bytes, channel-major.
pub fn to_model_input(image: &DynamicImage, shape: PhotoShape) -> Vec<u8> {
    let n = shape.size as u32;
    let resized = match shape.resize {
        ResizeMode::Stretch => image.resize_exact(n, n, FilterType::Triangle),
        ResizeMode::Crop => {
            let (w, h) = (image.width() as f64, image.height() as f64);
            let scale = shape.size as f64 / w.min(h);
            let (sw, sh) = (((w * scale).round() as u32).max(n), ((h * scale).round() as u32).max(n));
            let scaled = image.resize_exact(sw, sh, FilterType::Triangle);
            // torchvision's CenterCrop: the top-left corner at round((size_in − size) / 2).
            let (x, y) = ((sw - n) / 2, (sh - n) / 2);
            scaled.crop_imm(x, y, n, n)
        }
    };
    planar(&resized, shape.channels)
}

/// `channels × h × w` bytes (RGB or luma) of an image, channel-major.
pub fn planar(image: &DynamicImage, channels: usize) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if channels == 1 {
        return image.to_luma8().into_raw();
    }
    let rgb = image.to_rgb8();
    let mut out = vec![0u8; 3 * w * h];
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = px[c];
        }
    }
    out
}

/// Decode one file straight to the model's input (see the module documentation).
pub fn load_photo(path: &Path, shape: PhotoShape) -> Result<Vec<u8>> {
    Ok(to_model_input(&decode(path)?.image, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageBuffer, Rgb};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 128]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn a_jpeg_cut_short_is_refused_and_a_whole_one_read() {
        let bytes = jpeg(20, 10);
        let p = Path::new("x.jpg");
        let d = decode_bytes(p, &bytes).unwrap();
        assert_eq!((d.image.width(), d.image.height()), (20, 10));
        let e = decode_bytes(p, &bytes[..bytes.len() * 2 / 3])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("truncated") && e.contains("x.jpg"), "{e}");
        let e = decode_bytes(p, b"hello world, not an image").err().unwrap().to_string();
        assert!(e.contains("not a JPEG or PNG"), "{e}");
    }

    #[test]
    fn stretch_and_crop_give_the_model_size_in_planes() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 20, |x, _| {
            Rgb([if x < 10 || x >= 30 { 255 } else { 0 }, 7, 9])
        }));
        for resize in [ResizeMode::Stretch, ResizeMode::Crop] {
            let px = to_model_input(
                &img,
                PhotoShape {
                    size: 8,
                    channels: 3,
                    resize,
                },
            );
            assert_eq!(px.len(), 3 * 64);
            assert!(px[64..128].iter().all(|&g| g == 7) && px[128..].iter().all(|&b| b == 9));
            // Stretch keeps the red side bands; the centre crop cuts them away.
            let red_left = px[0];
            match resize {
                ResizeMode::Stretch => assert!(red_left > 200, "{px:?}"),
                ResizeMode::Crop => assert!(px[..64].iter().all(|&r| r < 40), "{px:?}"),
            }
        }
        let gray = to_model_input(
            &img,
            PhotoShape {
                size: 4,
                channels: 1,
                resize: ResizeMode::Stretch,
            },
        );
        assert_eq!(gray.len(), 16);
    }
}
