//! `vitcore attention`: what the token the head reads looks at.
//!
//! In the original ViT the head reads only the class token, so where the class token takes its
//! information from is where the model looks. Two views, both of the class token's row of attention weights,
//! restricted to the patches and drawn over the image (bilinear upsampling of the patch grid):
//!
//! - **each head of the last block**: `a[0, 1..]` of that head's `T×T` weights — what the final
//!   mixing step reads;
//! - **attention rollout** (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL
//!   2020): the information of a token also flows through the residual connection, so each
//!   block's attention is taken as `Â_l = norm_rows(mean_heads(A_l) + I)` (the identity for the
//!   residual, rows renormalised to sum to 1), and the flow from the input tokens to the last
//!   block's output is the product `R = Â_L · … · Â_1`. Row 0 of `R`, without its first entry,
//!   says how much of the class token's final state comes from each patch.
//!
//! A model whose head reads the mean of the patch tokens (`--global-pool avg`, the default
//! recipe's, with or without a class token) reads no single row: its pooled output is the mean
//! of the patch tokens' outputs, so what it takes from each patch is the mean of the patch
//! rows. Both views then use that mean row over the patch columns (of `A` for the heads, of `R`
//! for the rollout), and the weight it gives a class token, if any, in place of row 0's.
//!
//! Each map is drawn scaled to its own maximum: they show *where*, not how much.

use super::input::InputImage;
use crate::autograd::ParamStore;
use crate::error::Result;
use crate::nn::{GlobalPool, Vit};
use crate::tensor::Tensor;
use crate::viz::heat::{normalise_by_max, overlay, upsample_bilinear};
use crate::viz::tiles::{self, Tile};
use crate::viz::{to_rgb, Canvas, GRAY};
use plotters::style::colors::BLACK;

/// The class token's attention over the patches of one image.
#[derive(Clone, Debug)]
pub struct ClassAttention {
    /// The model's probability per class.
    pub probabilities: Vec<f32>,
    /// Per head of the last block: the weight the class token (or, pooled, the mean patch row)
    /// gives each patch (`N`, row-major patch order), and the weight it gives the class token
    /// (`None` without one).
    pub heads: Vec<(Vec<f32>, Option<f32>)>,
    /// The head reads the mean of the patch tokens, not the class token.
    pub pooled: bool,
    /// Attention rollout through all blocks: the share of each patch (`N`).
    pub rollout: Vec<f32>,
    /// The patch grid, rows × columns.
    pub grid: (usize, usize),
}

/// The rollout `R = Â_L · … · Â_1` of one image's weights (`[h, T, T]` per block, `h·T·T`
/// values each), `Â_l = norm_rows(mean_heads(A_l) + I)`; returned as `T×T`, row-major.
pub fn rollout(blocks: &[Vec<f32>], heads: usize, t: usize) -> Vec<f32> {
    let mut r: Vec<f32> = (0..t * t).map(|i| if i / t == i % t { 1.0 } else { 0.0 }).collect();
    for a in blocks {
        let mut m = vec![0.0f32; t * t];
        for h in 0..heads {
            for (x, &v) in m.iter_mut().zip(&a[h * t * t..(h + 1) * t * t]) {
                *x += v / heads as f32;
            }
        }
        for (i, row) in m.chunks_mut(t).enumerate() {
            row[i] += 1.0;
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        // R ← Â_l · R: block l mixes what the earlier blocks produced.
        let mut next = vec![0.0f32; t * t];
        for i in 0..t {
            for k in 0..t {
                let mik = m[i * t + k];
                for j in 0..t {
                    next[i * t + j] += mik * r[k * t + j];
                }
            }
        }
        r = next;
    }
    r
}

/// Run `vit` on one image (pixels normalised as in training: `(p/255 − mean)/std`) and collect
/// the class token's attention. The image must have the model's size (see
/// [`super::input::load_for_model`]).
pub fn class_attention(vit: &Vit, store: &ParamStore, img: &InputImage, mean: f32, std: f32) -> Result<ClassAttention> {
    let cfg = &vit.cfg;
    let x: Vec<f32> = img
        .pixels
        .iter()
        .map(|&p| crate::data::loader::normalise(p, mean, std))
        .collect();
    let x = Tensor::from_vec(x, &[1, 1, img.height, img.width])?;
    let (logits, weights) = vit.forward_with_attention(store, x)?;
    let logits = logits.values()?;
    let (h, t) = (cfg.heads, vit.tokens());
    let blocks: Vec<Vec<f32>> = weights.iter().map(|w| w.values()).collect::<Result<_>>()?;
    let last = blocks.last().expect("a ViT has at least one block");
    let prefix = usize::from(vit.cls_token.is_some());
    let pooled = vit.opts.global_pool == GlobalPool::Avg;
    // The row the head reads: row 0 (the class token's), or the mean of the patch rows.
    let read = |a: &[f32]| -> Vec<f32> {
        match pooled {
            false => a[..t].to_vec(),
            true => mean_row(&a[prefix * t..t * t], t),
        }
    };
    let heads = (0..h)
        .map(|k| {
            let row = read(&last[k * t * t..(k + 1) * t * t]);
            (row[prefix..].to_vec(), (prefix == 1).then(|| row[0]))
        })
        .collect();
    let r = read(&rollout(&blocks, h, t));
    Ok(ClassAttention {
        probabilities: crate::ops::softmax::probabilities(&logits),
        heads,
        pooled,
        rollout: r[prefix..].to_vec(),
        grid: (cfg.image_height / cfg.patch, cfg.image_width / cfg.patch),
    })
}

/// The mean of the rows of a row-major matrix `t` wide.
fn mean_row(a: &[f32], t: usize) -> Vec<f32> {
    let rows = (a.len() / t) as f32;
    let mut m = vec![0.0f32; t];
    for row in a.chunks(t) {
        m.iter_mut().zip(row).for_each(|(x, &v)| *x += v / rows);
    }
    m
}

/// Pixels per image pixel in the picture.
const SCALE: usize = 6;

/// The picture: the input, the rollout, then each head of the last block, each map over the
/// image. `name` names the run in the title.
pub fn picture(img: &InputImage, a: &ClassAttention, depth: usize, name: &str) -> Result<Canvas> {
    let (h, w) = (img.height * SCALE, img.width * SCALE);
    let base: Vec<[u8; 3]> = {
        let small = to_rgb(&img.pixels, [1, img.height, img.width]);
        (0..h * w)
            .map(|i| small[(i / w / SCALE) * img.width + (i % w) / SCALE])
            .collect()
    };
    let over = |map: &[f32]| -> Vec<u8> {
        let heat = upsample_bilinear(&normalise_by_max(map), a.grid, (h, w));
        planar(&overlay(&base, &heat))
    };
    let best = (0..a.probabilities.len())
        .max_by(|&i, &j| a.probabilities[i].total_cmp(&a.probabilities[j]))
        .unwrap_or(0);
    let mut panels: Vec<(Vec<u8>, [String; 2])> = vec![
        (
            planar(&base),
            [
                format!("input: class {best} ({:.0}%)", 100.0 * a.probabilities[best]),
                img.label.map_or(String::new(), |l| format!("label {l}")),
            ],
        ),
        (
            over(&a.rollout),
            [
                format!("rollout, {depth} blocks"),
                format!("patches {:.0}%", 100.0 * a.rollout.iter().sum::<f32>()),
            ],
        ),
    ];
    for (k, (map, own)) in a.heads.iter().enumerate() {
        let top = map.iter().fold(0.0f32, |m, &v| m.max(v));
        panels.push((
            over(map),
            [
                format!("block {depth}, head {}", k + 1),
                match (own, a.pooled) {
                    (Some(own), _) => format!("max {:.0}%, to CLS {:.0}%", 100.0 * top, 100.0 * own),
                    (None, true) => format!("max {:.0}% (mean row)", 100.0 * top),
                    (None, false) => format!("max {:.0}%", 100.0 * top),
                },
            ],
        ));
    }
    let tiles: Vec<Tile> = panels
        .iter()
        .map(|(px, [l1, l2])| Tile {
            pixels: px,
            lines: vec![(l1.clone(), BLACK), (l2.clone(), GRAY)],
            frame: None,
        })
        .collect();
    tiles::sheet(
        &format!(
            "{}: what {} attends to ({name})",
            img.name,
            match a.pooled {
                true => "the pooled output",
                false => "the class token",
            }
        ),
        "each map scaled to its own maximum (dark: little, yellow: most); rollout: heads averaged, identity added, \
         rows renormalised, multiplied through the blocks",
        &tiles,
        [3, h, w],
        1,
        6,
    )
}

/// Row-major RGB pixels as channel-major planes (`[3, H, W]`, as [`Tile`] takes them).
fn planar(rgb: &[[u8; 3]]) -> Vec<u8> {
    (0..3).flat_map(|c| rgb.iter().map(move |p| p[c])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_of_uniform_attention_and_of_self_attention() {
        // Every token attending to itself only: Â = I each block, R = I.
        let t = 3;
        let eye: Vec<f32> = (0..t * t).map(|i| (i / t == i % t) as u8 as f32).collect();
        assert_eq!(rollout(&[eye.clone(), eye.clone()], 1, t), eye);
        // Uniform attention U (1/3 everywhere): Â = (U + I)/2; rows still sum to 1 after two
        // blocks, and the diagonal is (1/6 + 1/2)² + 2·(1/6)² = 1/2 - the mixing of the
        // residual keeps half of a token on itself.
        let u = vec![1.0 / 3.0; t * t];
        let r = rollout(&[u.clone(), u], 1, t);
        for row in r.chunks(t) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!((r[0] - 0.5).abs() < 1e-6, "{r:?}");
        // Two heads are averaged before the identity is added.
        let two = [eye.clone(), vec![1.0 / 3.0; t * t]].concat();
        let one = rollout(&[two], 2, t);
        let expect_diag = (0.5 + 1.0 / 6.0 + 1.0) / 2.0;
        assert!((one[0] - expect_diag).abs() < 1e-6, "{one:?}");
    }

    #[test]
    fn class_token_row_or_mean_row_by_the_model() {
        use crate::nn::{GlobalPool, VitOptions};
        let mut cfg = crate::train::TrainConfig::default_preset().model;
        (cfg.embed_dim, cfg.heads, cfg.mlp_dim, cfg.depth) = (16, 2, 32, 2);
        let img = InputImage {
            pixels: (0..784).map(|i| (i * 37 % 256) as u8).collect(),
            height: 28,
            width: 28,
            label: None,
            path: "x.png".into(),
            name: "x".into(),
            notes: Vec::new(),
        };
        for (class_token, pool) in [
            (true, GlobalPool::Token),
            (true, GlobalPool::Avg),
            (false, GlobalPool::Avg),
        ] {
            let opts = VitOptions {
                no_class_token: !class_token,
                global_pool: pool,
                ..VitOptions::default()
            };
            let mut store = ParamStore::new();
            let vit = Vit::with_options(cfg.clone(), opts, &mut store, 4).unwrap();
            let a = class_attention(&vit, &store, &img, 0.5, 0.5).unwrap();
            assert_eq!(a.heads.len(), 2);
            assert_eq!(a.pooled, pool == GlobalPool::Avg);
            for (map, own) in &a.heads {
                assert_eq!(map.len(), 16, "one weight per patch");
                assert_eq!(own.is_some(), class_token);
                // A row of weights sums to 1: over the patches and the class token, or over
                // the patches alone (the mean of rows that each sum to 1).
                let total = map.iter().sum::<f32>() + own.unwrap_or(0.0);
                assert!((total - 1.0).abs() < 1e-5, "{total}");
            }
            assert_eq!(a.rollout.len(), 16);
            let flow: f32 = a.rollout.iter().sum();
            match class_token {
                true => assert!(flow > 0.0 && flow < 1.0, "{flow}"),
                false => assert!((flow - 1.0).abs() < 1e-5, "{flow}"),
            }
            if class_token && pool == GlobalPool::Avg {
                // The mean of the patch rows (1..17) at patch column 0, not row 0.
                let x: Vec<f32> = img
                    .pixels
                    .iter()
                    .map(|&p| crate::data::loader::normalise(p, 0.5, 0.5))
                    .collect();
                let x = Tensor::from_vec(x, &[1, 1, 28, 28]).unwrap();
                let (_, weights) = vit.forward_with_attention(&store, x).unwrap();
                let last = weights.last().unwrap().values().unwrap();
                let t = 17;
                let want: f32 = (1..t).map(|i| last[i * t + 1]).sum::<f32>() / 16.0;
                assert!((a.heads[0].0[0] - want).abs() < 1e-6, "{} vs {want}", a.heads[0].0[0]);
            }
        }
    }
}
