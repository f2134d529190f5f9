//! Heat maps over images: bilinear upsampling of a coarse map (one value per patch) to the
//! image's pixels, and its overlay on the image in the viridis colour map.

use plotters::style::colors::colormaps::ViridisRGB;

/// Upsample `map` (`gh × gw`, row-major) to `h × w` by bilinear interpolation with half-pixel
/// centres (PyTorch's `interpolate(mode="bilinear", align_corners=False)`): output pixel `y`
/// samples the map at `(y + 0.5)·gh/h − 0.5`, clamped to the map's edge.
pub fn upsample_bilinear(map: &[f32], (gh, gw): (usize, usize), (h, w): (usize, usize)) -> Vec<f32> {
    let coord = |o: usize, n_out: usize, n_in: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).clamp(0.0, (n_in - 1) as f32);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(n_in - 1), s - i0 as f32)
    };
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        let (y0, y1, fy) = coord(y, h, gh);
        for x in 0..w {
            let (x0, x1, fx) = coord(x, w, gw);
            let at = |r: usize, c: usize| map[r * gw + c];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// `map` scaled to [0, 1] by its maximum (all zeros stay zeros; negative values count as 0).
pub fn normalise_by_max(map: &[f32]) -> Vec<f32> {
    let max = map.iter().fold(0.0f32, |m, &v| m.max(v));
    map.iter()
        .map(|&v| if max > 0.0 { v.max(0.0) / max } else { 0.0 })
        .collect()
}

/// The viridis colour of `v ∈ [0, 1]` (dark purple → yellow; readable in gray and by colour-blind
/// eyes).
pub fn viridis(v: f32) -> [u8; 3] {
    let c = ViridisRGB::get_color(v.clamp(0.0, 1.0));
    [c.0, c.1, c.2]
}

/// `heat` (values in [0, 1], one per pixel of `image`) over `image` (RGB pixels): each pixel
/// blends the image, darkened to 60% so the colours stand out, with the heat's viridis colour,
/// weighted by the heat itself, so where the model does not look the image shows through.
pub fn overlay(image: &[[u8; 3]], heat: &[f32]) -> Vec<[u8; 3]> {
    image
        .iter()
        .zip(heat)
        .map(|(px, &v)| {
            let (a, col) = (0.85 * v.clamp(0.0, 1.0), viridis(v));
            std::array::from_fn(|i| ((1.0 - a) * 0.6 * px[i] as f32 + a * col[i] as f32).round() as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_upsampling_keeps_constants_and_interpolates_between_centres() {
        assert!(upsample_bilinear(&[3.0; 4], (2, 2), (7, 5)).iter().all(|&v| v == 3.0));
        // 1×2 → 1×4: centres of the outputs at 0.25, 0.75, 1.25, 1.75 input pixels, i.e. samples
        // at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        assert_eq!(upsample_bilinear(&[0.0, 4.0], (1, 2), (1, 4)), vec![0.0, 1.0, 3.0, 4.0]);
        // Rows: the same along y; a map is never transposed.
        let up = upsample_bilinear(&[0.0, 0.0, 8.0, 8.0], (2, 2), (4, 2));
        assert_eq!(up, vec![0.0, 0.0, 2.0, 2.0, 6.0, 6.0, 8.0, 8.0]);
    }

    #[test]
    fn overlay_keeps_cold_pixels_and_colours_hot_ones() {
        let img = [[200u8; 3], [200u8; 3]];
        let out = overlay(&img, &[0.0, 1.0]);
        assert_eq!(out[0], [120; 3], "no heat: the image, darkened");
        assert!(
            out[1][2] < 100 && out[1][0] > 200,
            "full heat: viridis yellow, {:?}",
            out[1]
        );
        assert_eq!(normalise_by_max(&[1.0, 2.0, -1.0]), vec![0.5, 1.0, 0.0]);
    }
}
