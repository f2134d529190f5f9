//! Pictures: training curves, confusion matrices, grids of titled images, attention overlays.
//!
//! Everything is drawn into a [`Canvas`], an RGB buffer: images are copied into it pixel by
//! pixel (scaled up by whole factors, nearest neighbour, so a digit's pixels stay sharp and
//! nothing is mirrored: pixel `(row r, column c)` lands at `x = c`, `y = r`, top left first),
//! and text, lines and charts are drawn on it by plotters' bitmap backend. The PNG is encoded by
//! `image` and written atomically ([`crate::fsutil::write_atomic`]).
//!
//! Text uses DejaVu Sans, compiled into the binary (the `dejavu` crate; Bitstream Vera licence
//! with public-domain DejaVu changes) and handed to plotters' `ab_glyph` renderer, so the
//! pictures are the same on a machine with no system fonts at all (CI has none).
//!
//! This module knows nothing of models or runs: callers hand it numbers and pixels.

pub mod charts;
pub mod heat;
pub mod tiles;

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

/// The font family every picture uses (registered by [`Canvas::new`]).
pub const FONT: &str = "sans-serif";

/// Colours shared by the pictures: train/validation curves, right/wrong marks.
pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(230, 110, 0);
pub const GREEN: RGBColor = RGBColor(0, 128, 60);
pub const RED: RGBColor = RGBColor(210, 20, 30);
pub const GRAY: RGBColor = RGBColor(110, 110, 110);

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The bytes are DejaVu's own TTF: parsing it cannot fail.
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok();
        assert!(ok, "the bundled DejaVu Sans fonts parse");
    });
}

/// A drawing error (plotters reports only font problems here) as the crate's error.
pub(crate) fn drawn<T, E: std::fmt::Debug>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::config(format!("drawing a picture failed: {e:?}")))
}

/// A text style: `size` pixels, `color`, anchored at `anchor` (e.g. centre-top).
pub fn text_style(size: f64, color: RGBColor, anchor: (HPos, VPos)) -> TextStyle<'static> {
    styled((FONT, size).into_font(), color, anchor)
}

/// A title's style: [`text_style`], for now in the regular weight too. (DejaVu Sans Bold through
/// plotters' `ab_glyph` renderer draws some glyphs, `u` among them, a few pixels too high.)
pub fn bold_style(size: f64, color: RGBColor, anchor: (HPos, VPos)) -> TextStyle<'static> {
    styled((FONT, size).into_font(), color, anchor)
}

/// [`text_style`] turned a quarter to the left (reads bottom to top: a vertical axis's label).
pub fn vertical_style(size: f64, color: RGBColor, anchor: (HPos, VPos)) -> TextStyle<'static> {
    styled(
        (FONT, size).into_font().transform(FontTransform::Rotate270),
        color,
        anchor,
    )
}

fn styled(font: FontDesc<'static>, color: RGBColor, (h, v): (HPos, VPos)) -> TextStyle<'static> {
    TextStyle {
        font,
        color: color.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// An RGB picture being drawn: `width × height` pixels, white to start with.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        register_fonts();
        Canvas {
            width,
            height,
            rgb: vec![255; width as usize * height as usize * 3],
        }
    }

    /// The whole canvas as a plotters drawing area (for text, lines and charts).
    pub fn area(&mut self) -> DrawingArea<BitMapBackend<'_>, Shift> {
        BitMapBackend::with_buffer(&mut self.rgb, (self.width, self.height)).into_drawing_area()
    }

    /// Draw `text` at `(x, y)` in `style` (its anchor says which point of the text that is).
    pub fn text(&mut self, text: &str, (x, y): (i32, i32), style: &TextStyle) -> Result<()> {
        drawn(self.area().draw_text(text, style, (x, y)))
    }

    /// A rectangle outline `thickness` pixels wide, inside `(x0, y0)..(x1, y1)` (exclusive).
    pub fn frame(&mut self, (x0, y0): (i32, i32), (x1, y1): (i32, i32), color: RGBColor, thickness: i32) -> Result<()> {
        let area = self.area();
        for k in 0..thickness {
            let r = Rectangle::new([(x0 + k, y0 + k), (x1 - 1 - k, y1 - 1 - k)], color.stroke_width(1));
            drawn(area.draw(&r))?;
        }
        Ok(())
    }

    /// Set one pixel (outside the canvas: ignored).
    pub fn put(&mut self, x: i64, y: i64, [r, g, b]: [u8; 3]) {
        if (0..self.width as i64).contains(&x) && (0..self.height as i64).contains(&y) {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&[r, g, b]);
        }
    }

    /// Fill `(x0, y0)..(x1, y1)` (exclusive) with one colour.
    pub fn fill(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, rgb);
            }
        }
    }

    /// Copy an RGB image (`w × h`, row-major `[r, g, b]` per pixel) with its top-left corner at
    /// `(x, y)`, each pixel becoming a `scale × scale` square.
    pub fn rgb_image(&mut self, (x, y): (i64, i64), rgb: &[[u8; 3]], w: usize, h: usize, scale: usize) {
        for r in 0..h * scale {
            for c in 0..w * scale {
                self.put(x + c as i64, y + r as i64, rgb[(r / scale) * w + c / scale]);
            }
        }
    }

    /// Copy one image of `channels × h × w` bytes, channel-major as datasets hold them (1
    /// channel: gray; 3: RGB), like [`Canvas::rgb_image`].
    pub fn image(&mut self, at: (i64, i64), pixels: &[u8], [channels, h, w]: [usize; 3], scale: usize) {
        self.rgb_image(at, &to_rgb(pixels, [channels, h, w]), w, h, scale);
    }

    /// The picture as PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let img = image::RgbImage::from_raw(self.width, self.height, self.rgb.clone())
            .expect("the buffer holds width × height RGB pixels");
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .map_err(|e| Error::config(format!("encoding a PNG failed: {e}")))?;
        Ok(out)
    }

    /// Write the picture as a PNG to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.png()?)
    }
}

/// `channels × h × w` bytes (channel-major) as RGB pixels, row-major: 1 channel is gray, 3 are
/// R, G, B; any other count shows its first channel as gray.
pub fn to_rgb(pixels: &[u8], [channels, h, w]: [usize; 3]) -> Vec<[u8; 3]> {
    let plane = h * w;
    (0..plane)
        .map(|i| match channels {
            3 => [pixels[i], pixels[plane + i], pixels[2 * plane + i]],
            _ => [pixels[i]; 3],
        })
        .collect()
}
