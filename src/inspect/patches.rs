//! `vitcore show patches`: an image with the patch grid drawn on it, and the patch sequence as
//! the model receives it (`ops::patchify`): the class token first, then the patches in
//! row-major order (left to right, then top to bottom), token `i` being patch `i − 1`.

use super::input::InputImage;
use crate::error::{Error, Result};
use crate::viz::{bold_style, text_style, Canvas, GRAY};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// The grid's and the numbers' colour: amber shows on black and on white.
const AMBER: RGBColor = RGBColor(255, 176, 0);

/// Pixels the title needs: the name (bold 16 px, under 10 px a character) and about 560 for the
/// rest of the line.
fn title_width(name: &str) -> i32 {
    name.chars().count() as i32 * 10 + 600
}

/// The picture for `img` cut into `patch × patch` patches. Errors when `patch` does not divide
/// the image's sides (naming the image).
pub fn picture(img: &InputImage, patch: usize) -> Result<Canvas> {
    let (h, w) = (img.height, img.width);
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(Error::data(
            &img.path,
            None,
            format!("--patch {patch} does not divide the image's size {w}x{h} (width x height)"),
        ));
    }
    let (gh, gw) = (h / patch, w / patch);
    let n = gh * gw;
    // The image about 224 pixels across; each patch of the sequence about 56.
    let s = (224 / h.max(w)).max(1);
    let ps = (56 / patch).max(1);
    let tile = (patch * ps) as i32;
    let cols = (n + 1).min(9);
    let rows = (n + 1).div_ceil(cols);
    let (left_w, top) = ((w * s) as i32 + 60, 62);
    let cell = tile + 12;
    let seq_h = rows as i32 * (cell + 16);
    let width = (16 + left_w + cols as i32 * cell + 16)
        .max(760)
        .max(title_width(&img.name));
    let height = top + ((h * s) as i32 + 12).max(seq_h) + 40;
    let mut c = Canvas::new(width as u32, height as u32);
    let title = format!(
        "{}: {w}x{h} pixels, patch {patch}: {gw}x{gh} = {n} patches + the class token = {} tokens",
        img.name,
        n + 1
    );
    c.text(&title, (16, 12), &bold_style(16.0, BLACK, (HPos::Left, VPos::Top)))?;
    let sub = text_style(13.0, GRAY, (HPos::Left, VPos::Top));
    c.text("the image and its patch grid", (16, 38), &sub)?;
    c.text(
        "the sequence the model receives (token: patch)",
        (16 + left_w, 38),
        &sub,
    )?;
    // Left: the image, the grid, each patch's token number in its corner.
    let (x0, y0) = (16i64, top as i64);
    c.image((x0, y0), &img.pixels, [1, h, w], s);
    let (iw, ih) = ((w * s) as i64, (h * s) as i64);
    for k in 0..=gw {
        let x = (x0 + (k * patch * s) as i64).min(x0 + iw - 1);
        c.fill((x, y0), (x + 1, y0 + ih), [AMBER.0, AMBER.1, AMBER.2]);
    }
    for k in 0..=gh {
        let y = (y0 + (k * patch * s) as i64).min(y0 + ih - 1);
        c.fill((x0, y), (x0 + iw, y + 1), [AMBER.0, AMBER.1, AMBER.2]);
    }
    let number = text_style(11.0, AMBER, (HPos::Left, VPos::Top));
    for p in 0..n {
        let (r, col) = (p / gw, p % gw);
        let at = (
            (x0 + (col * patch * s) as i64 + 3) as i32,
            (y0 + (r * patch * s) as i64 + 3) as i32,
        );
        c.text(&(p + 1).to_string(), at, &number)?;
    }
    // Right: token 0 (the class token: learned, no pixels), then each patch.
    let label = text_style(12.0, BLACK, (HPos::Center, VPos::Top));
    for t in 0..=n {
        let (x, y) = (
            16 + left_w + (t % cols) as i32 * cell,
            top + (t / cols) as i32 * (cell + 16),
        );
        if t == 0 {
            c.fill(
                (x as i64, y as i64),
                ((x + tile) as i64, (y + tile) as i64),
                [200, 200, 200],
            );
            let centre = (x + tile / 2, y + tile / 2);
            c.text("CLS", centre, &bold_style(12.0, BLACK, (HPos::Center, VPos::Center)))?;
            c.text("0: class", (x + tile / 2, y + tile + 3), &label)?;
            continue;
        }
        let (r, col) = ((t - 1) / gw, (t - 1) % gw);
        let pixels: Vec<u8> = (0..patch)
            .flat_map(|i| {
                let start = (r * patch + i) * w + col * patch;
                img.pixels[start..start + patch].iter().copied()
            })
            .collect();
        c.image((x as i64, y as i64), &pixels, [1, patch, patch], ps);
        c.frame((x - 1, y - 1), (x + tile + 1, y + tile + 1), RGBColor(150, 150, 150), 1)?;
        c.text(&t.to_string(), (x + tile / 2, y + tile + 3), &label)?;
    }
    let foot = format!(
        "each patch is flattened to {} values (its rows one after another) and projected to the embedding; \
         the position embedding then says where it was",
        patch * patch
    );
    c.text(
        &foot,
        (16, height - 30),
        &text_style(13.0, GRAY, (HPos::Left, VPos::Top)),
    )?;
    Ok(c)
}
