//! A contact sheet: images in a grid, each with a few lines of text above it and an optional
//! coloured frame (predictions with their mistakes marked, images whose label looks wrong).

use super::{bold_style, text_style, Canvas, GRAY};
use crate::error::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// One image of the sheet: its pixels (`channels × h × w`, as datasets hold them), the lines
/// written above it (text, colour) and, for images to mark, the colour of a frame around it.
pub struct Tile<'a> {
    pub pixels: &'a [u8],
    pub lines: Vec<(String, RGBColor)>,
    pub frame: Option<RGBColor>,
}

/// Pixels per line of a tile's text.
const LINE: i32 = 16;
/// Width of a mark's frame.
const FRAME: i32 = 3;

/// The sheet: `title` (bold) and `subtitle` (gray) on top, then the tiles row by row, `cols`
/// to a row, each image `scale` times its size. Images of `shape` `[C, H, W]`.
pub fn sheet(
    title: &str,
    subtitle: &str,
    tiles: &[Tile],
    shape: [usize; 3],
    scale: usize,
    cols: usize,
) -> Result<Canvas> {
    let (iw, ih) = ((shape[2] * scale) as i32, (shape[1] * scale) as i32);
    let lines = tiles.iter().map(|t| t.lines.len()).max().unwrap_or(0) as i32;
    // DejaVu Sans at 13 px averages under 7.5 px a character.
    let longest = tiles
        .iter()
        .flat_map(|t| &t.lines)
        .map(|(s, _)| s.chars().count())
        .max()
        .unwrap_or(0);
    let cell_w = (iw + 2 * FRAME + 14).max((longest as f64 * 7.5) as i32 + 12);
    let cell_h = lines * LINE + ih + 2 * FRAME + 14;
    let cols = cols.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(cols).max(1);
    let head = 58;
    // Wide enough for the title (bold 17 px: under 10 px a character) and the subtitle (13 px).
    let text_w = (title.chars().count() as i32 * 10).max((subtitle.chars().count() as f64 * 6.8) as i32) + 24;
    let width = (cell_w * cols as i32 + 20).max(text_w);
    let mut canvas = Canvas::new(width as u32, (head + cell_h * rows as i32 + 8) as u32);
    canvas.text(title, (12, 10), &bold_style(17.0, BLACK, (HPos::Left, VPos::Top)))?;
    canvas.text(subtitle, (12, 33), &text_style(13.0, GRAY, (HPos::Left, VPos::Top)))?;
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = (10 + (i % cols) as i32 * cell_w, head + (i / cols) as i32 * cell_h);
        for (j, (text, color)) in tile.lines.iter().enumerate() {
            let style = text_style(13.0, *color, (HPos::Center, VPos::Top));
            canvas.text(text, (x + cell_w / 2, y + j as i32 * LINE), &style)?;
        }
        let (ix, iy) = (x + (cell_w - iw) / 2, y + lines * LINE + FRAME + 2);
        canvas.image((ix as i64, iy as i64), tile.pixels, shape, scale);
        if let Some(c) = tile.frame {
            canvas.frame((ix - FRAME, iy - FRAME), (ix + iw + FRAME, iy + ih + FRAME), c, FRAME)?;
        }
    }
    Ok(canvas)
}
