//! Charts: the training curves of a run and a confusion matrix as a labelled heat map.

use super::{bold_style, drawn, text_style, vertical_style, Canvas, BLUE, FONT, ORANGE};
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// One epoch of a run's log (accuracies as fractions in [0, 1]; NaN validation values when the
/// run had no validation set).
#[derive(Clone, Copy, Debug)]
pub struct EpochPoint {
    pub epoch: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub lr: f64,
}

/// `curves.png`: three panels side by side, 1500 × 450 pixels: the loss and the accuracy (%)
/// per epoch, train against validation, and the learning rate at each epoch's end.
pub fn curves(title: &str, points: &[EpochPoint]) -> Result<Canvas> {
    let mut canvas = Canvas::new(1500, 450);
    {
        let root = canvas.area();
        let root = drawn(root.titled(title, bold_style(20.0, BLACK, (HPos::Left, VPos::Top))))?;
        let panels = root.split_evenly((1, 3));
        let series = |f: fn(&EpochPoint) -> f64| -> Vec<(f64, f64)> {
            points
                .iter()
                .map(|p| (p.epoch, f(p)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        };
        let two = |train: fn(&EpochPoint) -> f64, val: fn(&EpochPoint) -> f64| {
            vec![("train", BLUE, series(train)), ("validation", ORANGE, series(val))]
        };
        // (caption, y axis, lines, y labels, where the legend goes: away from where curves end)
        let specs: [Panel; 3] = [
            (
                "loss",
                "cross-entropy",
                two(|p| p.train_loss, |p| p.val_loss),
                |v| format!("{v:.2}"),
                SeriesLabelPosition::UpperRight,
            ),
            (
                "accuracy",
                "accuracy (%)",
                two(|p| 100.0 * p.train_acc, |p| 100.0 * p.val_acc),
                |v| format!("{v:.1}"),
                SeriesLabelPosition::LowerRight,
            ),
            (
                "learning rate",
                "learning rate",
                vec![("at the epoch's end", BLUE, series(|p| p.lr))],
                |v| if v == 0.0 { "0".into() } else { format!("{v:.1e}") },
                SeriesLabelPosition::UpperRight,
            ),
        ];
        for (area, spec) in panels.iter().zip(specs) {
            panel(area, spec)?;
        }
    }
    Ok(canvas)
}

/// One chart: caption, y axis description, the lines `(name, colour, points)`, the y labels'
/// format, and where the legend goes.
type Panel = (
    &'static str,
    &'static str,
    Vec<(&'static str, RGBColor, Vec<(f64, f64)>)>,
    fn(f64) -> String,
    SeriesLabelPosition,
);

/// Draw one chart: each line with dots, a legend, the x axis in whole epochs, the y axis from
/// the data's range (with a margin).
fn panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, (caption, y_desc, lines, fmt, legend): Panel) -> Result<()> {
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
    let last = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, false) => (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3)),
        (true, true) => (lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo)),
    };
    let mut chart = drawn(
        ChartBuilder::on(area)
            .caption(caption, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(72)
            .build_cartesian_2d(0.5..last + 0.5, lo..hi),
    )?;
    // Ticks only at whole epochs: a fractional tick would be labelled with a rounded epoch.
    let whole = |x: &f64| match (x - x.round()).abs() < 1e-9 {
        true => format!("{}", x.round()),
        false => String::new(),
    };
    let y_fmt = |y: &f64| fmt(*y);
    drawn(
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels((last as usize + 1).min(12))
            .y_labels(6)
            .x_label_formatter(&whole)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(TRANSPARENT)
            .draw(),
    )?;
    for (name, color, pts) in lines.iter().filter(|(_, _, p)| !p.is_empty()) {
        let c = *color;
        drawn(chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2))))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2)));
        drawn(chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))))?;
    }
    drawn(
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT, 13))
            .draw(),
    )
}

/// Matplotlib's "Blues" ends: a cell's colour goes from the first (0% of its row) to the second
/// (100%), by the square root of its share, so that a class's few confusions (1–5% of its
/// images) show against the white of none, while the diagonal stays the darkest.
const LIGHT: [f64; 3] = [247.0, 251.0, 255.0];
const DARK: [f64; 3] = [8.0, 48.0, 107.0];

fn blues(share: f64) -> RGBColor {
    let f = share.clamp(0.0, 1.0).sqrt();
    let c = |i: usize| (LIGHT[i] + f * (DARK[i] - LIGHT[i])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// `confusion.png`: `confusion[t][p]` (images of true class t predicted as p) as a heat map,
/// rows = true class, columns = predicted, each cell printing its count and coloured by its
/// share of its row (so a class's errors show whatever its size; square-root scale, see
/// [`blues`]), with a colour bar.
pub fn confusion(title: &str, confusion: &[Vec<usize>]) -> Result<Canvas> {
    let k = confusion.len().max(1);
    let cell = if k <= 10 { 46 } else { (460 / k).max(18) } as i32;
    let (left, top) = (96, 64);
    let (grid, bar_x) = (cell * k as i32, 96 + cell * k as i32 + 28);
    let mut canvas = Canvas::new((bar_x + 90) as u32, (top + grid + 74) as u32);
    canvas.text(
        title,
        (left - 60, 14),
        &bold_style(17.0, BLACK, (HPos::Left, VPos::Top)),
    )?;
    let count_size = if k <= 10 { 13.0 } else { 9.0 };
    for (t, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (p, &n) in row.iter().enumerate() {
            let f = n as f64 / total;
            let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
            let RGBColor(r, g, b) = blues(f);
            canvas.fill((x as i64, y as i64), ((x + cell) as i64, (y + cell) as i64), [r, g, b]);
            let ink = if f > 0.3 { WHITE } else { BLACK };
            let centre = (x + cell / 2, y + cell / 2);
            canvas.text(
                &n.to_string(),
                centre,
                &text_style(count_size, ink, (HPos::Center, VPos::Center)),
            )?;
        }
        let label = text_style(14.0, BLACK, (HPos::Right, VPos::Center));
        canvas.text(&t.to_string(), (left - 8, top + t as i32 * cell + cell / 2), &label)?;
    }
    let label = text_style(14.0, BLACK, (HPos::Center, VPos::Top));
    for p in 0..k as i32 {
        canvas.text(&p.to_string(), (left + p * cell + cell / 2, top + grid + 6), &label)?;
    }
    canvas.frame(
        (left, top),
        (left + grid + 1, top + grid + 1),
        RGBColor(120, 120, 120),
        1,
    )?;
    let axis = text_style(15.0, BLACK, (HPos::Center, VPos::Top));
    canvas.text("predicted class", (left + grid / 2, top + grid + 30), &axis)?;
    let vertical = vertical_style(15.0, BLACK, (HPos::Center, VPos::Top));
    canvas.text("true class", (left - 60, top + grid / 2), &vertical)?;
    // The colour bar: 0% at the bottom, 100% at the top, on the colours' square-root scale.
    let level = |y: i32| (1.0 - y as f64 / (grid - 1).max(1) as f64).powi(2);
    for y in 0..grid {
        let RGBColor(r, g, b) = blues(level(y));
        canvas.fill(
            (bar_x as i64, (top + y) as i64),
            ((bar_x + 16) as i64, (top + y + 1) as i64),
            [r, g, b],
        );
    }
    canvas.frame((bar_x, top), (bar_x + 17, top + grid + 1), RGBColor(120, 120, 120), 1)?;
    let tick = text_style(12.0, BLACK, (HPos::Left, VPos::Center));
    for (f, s) in [(1.0, "100%"), (0.25, "25%"), (0.05, "5%"), (0.01, "1%"), (0.0, "0%")] {
        let y = top + ((1.0 - f64::sqrt(f)) * (grid - 1) as f64) as i32;
        canvas.text(s, (bar_x + 22, y), &tick)?;
    }
    let note = text_style(12.0, BLACK, (HPos::Center, VPos::Top));
    canvas.text("share of", (bar_x + 28, top + grid + 6), &note)?;
    canvas.text("its row", (bar_x + 28, top + grid + 22), &note)?;
    Ok(canvas)
}
