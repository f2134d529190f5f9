//! Pretrained ViT weights: timm's and Hugging Face transformers' safetensors checkpoints, read
//! into vitcore's model (names mapped, the position embedding resampled, the head replaced).
//!
//! - **timm** (`vit_tiny/small/base_patch16_224` and their variants): vitcore's parameter names
//!   *are* timm's (`patch_embed.proj.weight`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm`,
//!   `head`), so the tensors load as they are. timm's LayerNorm eps is 1e-6
//!   (`partial(nn.LayerNorm, eps=1e-6)` in `vision_transformer.py`), not PyTorch's 1e-5.
//! - **Hugging Face** (`ViTModel` / `ViTForImageClassification`, with or without the `vit.`
//!   prefix): mapped to timm's names ([`hf_to_timm`]); its separate query, key and value
//!   projections are stacked into `attn.qkv` (rows q, k, v, as timm packs them); the pooler is
//!   not used. Its LayerNorm eps is 1e-12 (`ViTConfig.layer_norm_eps`).
//! - **The architecture** is read from the tensors ([`Pretrained::vit_config`]): D, C and P
//!   from `patch_embed.proj.weight [D, C, P, P]`, the depth from the blocks, the MLP width
//!   from `fc1`, the native grid from `pos_embed` (`1 + g²` rows with a class position, `g²`
//!   without: timm's `no_embed_class`), the classes from `head`. The head count is not in the
//!   tensors and is given (timm's ViT-Ti/S/B: 3/6/12 heads of 64).
//! - **Another input size**: the patch grid's position embeddings are resampled to the new
//!   grid as timm's `checkpoint_filter_fn` does (`resample_abs_pos_embed`: `F.interpolate(...,
//!   mode="bicubic", antialias=True, align_corners=False)`), the class token's position kept:
//!   [`resample_bicubic_aa`].
//! - **Another class count**: the head is replaced by the model's freshly initialised one.
//!
//! Shapes that still differ are an error listing every tensor, expected and found
//! (`checkpoint::assign_params`).

use std::collections::HashMap;
use std::path::Path;

use crate::autograd::ParamStore;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::nn::{GlobalPool, Init, Vit, VitConfig, VitOptions};
use crate::ops::GeluKind;
use crate::tensor::Tensor;

/// Where a checkpoint's names come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Timm,
    HuggingFace,
}

impl Layout {
    /// The LayerNorm eps the models of this layout were trained with.
    pub fn ln_eps(self) -> f32 {
        match self {
            Layout::Timm => 1e-6,
            Layout::HuggingFace => 1e-12,
        }
    }
}

/// A pretrained checkpoint, its tensors under timm's names.
pub struct Pretrained {
    pub layout: Layout,
    pub tensors: HashMap<String, Tensor>,
    /// Names that were dropped as unused (Hugging Face's pooler).
    pub unused: Vec<String>,
}

/// Hugging Face transformers' ViT name → timm's (`None`: not used by the classifier). Query,
/// key and value map to `blocks.N.attn.qkv.{q,k,v}.{weight,bias}`, stacked later.
pub fn hf_to_timm(name: &str) -> Option<String> {
    let n = name.strip_prefix("vit.").unwrap_or(name);
    let fixed = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        (
            "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.weight",
        ),
        ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
        ("layernorm.weight", "norm.weight"),
        ("layernorm.bias", "norm.bias"),
        ("classifier.weight", "head.weight"),
        ("classifier.bias", "head.bias"),
    ];
    if let Some((_, t)) = fixed.iter().find(|(h, _)| *h == n) {
        return Some(t.to_string());
    }
    let rest = n.strip_prefix("encoder.layer.")?;
    let (i, sub) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let parts = [
        ("layernorm_before.", "norm1."),
        ("attention.attention.query.", "attn.qkv.q."),
        ("attention.attention.key.", "attn.qkv.k."),
        ("attention.attention.value.", "attn.qkv.v."),
        ("attention.output.dense.", "attn.proj."),
        ("layernorm_after.", "norm2."),
        ("intermediate.dense.", "mlp.fc1."),
        ("output.dense.", "mlp.fc2."),
    ];
    let (h, t) = parts.iter().find(|(h, _)| sub.starts_with(h))?;
    Some(format!("blocks.{i}.{t}{}", &sub[h.len()..]))
}

impl Pretrained {
    /// Read a timm or Hugging Face ViT checkpoint (f32 safetensors).
    pub fn read(path: &Path) -> Result<Pretrained> {
        let (list, _) = checkpoint::load(path)?;
        let hf = list
            .iter()
            .any(|(n, _)| n.starts_with("vit.embeddings.") || n.starts_with("embeddings."));
        let mut unused = Vec::new();
        let mut tensors = HashMap::new();
        if !hf {
            tensors.extend(list);
        } else {
            let mut qkv: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
            for (name, t) in list {
                match hf_to_timm(&name) {
                    None => unused.push(name),
                    Some(m) => match m.rsplit_once(".attn.qkv.") {
                        Some((block, tail)) => {
                            let (which, kind) = tail.split_once('.').expect("q.weight-like tail");
                            let slot = ["q", "k", "v"].iter().position(|w| *w == which).expect("q, k or v");
                            qkv.entry(format!("{block}.attn.qkv.{kind}")).or_default()[slot] = Some(t);
                        }
                        None => {
                            tensors.insert(m, t);
                        }
                    },
                }
            }
            for (name, parts) in qkv {
                let [Some(q), Some(k), Some(v)] = parts else {
                    return Err(Error::checkpoint(
                        path,
                        format!("`{name}`: the query, key and value projections are not all there"),
                    ));
                };
                let stacked = crate::ops::concat::concat(&[&q, &k, &v], 0)
                    .map_err(|e| Error::checkpoint(path, format!("`{name}`: {e}")))?;
                tensors.insert(name, stacked);
            }
        }
        unused.sort();
        let p = Pretrained {
            layout: if hf { Layout::HuggingFace } else { Layout::Timm },
            tensors,
            unused,
        };
        p.shape_of(path, "patch_embed.proj.weight", 4)?;
        p.shape_of(path, "pos_embed", 3)?;
        Ok(p)
    }

    fn shape_of(&self, path: &Path, name: &str, rank: usize) -> Result<Vec<usize>> {
        match self.tensors.get(name) {
            Some(t) if t.rank() == rank => Ok(t.shape().to_vec()),
            Some(t) => Err(Error::checkpoint(
                path,
                format!("`{name}` has shape {:?}, expected {rank} dimensions", t.shape()),
            )),
            None => Err(Error::checkpoint(
                path,
                format!(
                    "has no `{name}`: not a timm or Hugging Face ViT checkpoint (its tensors: {})",
                    self.names_excerpt()
                ),
            )),
        }
    }

    fn names_excerpt(&self) -> String {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let shown: Vec<&str> = names.iter().take(8).map(|s| s.as_str()).collect();
        format!("{}{}", shown.join(", "), if names.len() > 8 { ", ..." } else { "" })
    }

    /// The model these tensors describe, with `heads` attention heads, at `image_size` (the
    /// native size when `None`) and with `classes` outputs (the head's when `None`).
    pub fn vit_config(
        &self,
        path: &Path,
        heads: usize,
        image_size: Option<usize>,
        classes: Option<usize>,
    ) -> Result<(VitConfig, VitOptions)> {
        let pe = self.shape_of(path, "patch_embed.proj.weight", 4)?;
        let (d, c, p) = (pe[0], pe[1], pe[2]);
        let t = self.shape_of(path, "pos_embed", 3)?[1];
        let (grid, no_embed_class) = native_grid(t).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!("`pos_embed` has {t} positions: neither g² nor 1 + g² (a square patch grid)"),
            )
        })?;
        let depth = (0..)
            .take_while(|i| self.tensors.contains_key(&format!("blocks.{i}.norm1.weight")))
            .count();
        let mlp = self
            .tensors
            .get("blocks.0.mlp.fc1.weight")
            .map_or(4 * d, |w| w.shape()[0]);
        let head_classes = self.tensors.get("head.weight").map(|w| w.shape()[0]);
        let num_classes = classes.or(head_classes).ok_or_else(|| {
            Error::checkpoint(
                path,
                "has no classification head (`head` / `classifier`): give the class count",
            )
        })?;
        if heads == 0 || d % heads != 0 {
            return Err(Error::config(format!(
                "{}: --heads {heads} must divide the embedding width {d} (timm's ViTs use heads of 64: {} heads)",
                path.display(),
                d / 64
            )));
        }
        let size = image_size.unwrap_or(grid * p);
        let cfg = VitConfig {
            image_height: size,
            image_width: size,
            channels: c,
            patch: p,
            embed_dim: d,
            depth,
            heads,
            mlp_dim: mlp,
            num_classes,
            dropout: 0.0,
            attn_dropout: 0.0,
            ln_eps: self.layout.ln_eps(),
            gelu: GeluKind::Erf,
            init: Init::Timm,
            identical_blocks: false,
        };
        cfg.validate()?;
        // A checkpoint without a class token (vitcore's default recipe, timm's
        // `class_token=False`) pools the patches; so does one with timm's `fc_norm`.
        let no_class_token = !self.tensors.contains_key("cls_token");
        let pooled = no_class_token || self.tensors.contains_key("fc_norm.weight");
        let opts = VitOptions {
            no_embed_class: no_embed_class && !no_class_token,
            no_class_token,
            global_pool: if pooled { GlobalPool::Avg } else { GlobalPool::Token },
            ..VitOptions::default()
        };
        cfg.validate_with(&opts)?;
        Ok((cfg, opts))
    }

    /// Put these weights into `vit`'s parameters (its config from [`Pretrained::vit_config`],
    /// possibly at another size or class count). Returns what was adapted, one line each.
    pub fn load_into(&self, path: &Path, vit: &Vit, store: &mut ParamStore) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let t = match name.as_str() {
                "pos_embed" => {
                    let want = store.value(vit.pos_embed).shape().to_vec();
                    // Only the grid may differ; any other mismatch is listed with the others below.
                    if t.rank() == 3 && t.shape()[1] != want[1] && t.shape()[2] == want[2] {
                        let patches_only = vit.opts.no_embed_class || vit.cls_token.is_none();
                        let r = resample_pos_embed(t, &want, patches_only)
                            .map_err(|e| Error::checkpoint(path, format!("`pos_embed`: {e}")))?;
                        notes.push(format!(
                            "position embedding resampled (bicubic, as timm) from {} to {} positions",
                            t.shape()[1],
                            want[1]
                        ));
                        r
                    } else {
                        t.clone()
                    }
                }
                "head.weight" | "head.bias" => {
                    let own = if name == "head.weight" {
                        vit.head.weight
                    } else {
                        vit.head.bias
                    };
                    if t.shape()[0] != store.value(own).shape()[0] {
                        if name == "head.weight" {
                            notes.push(format!(
                                "head replaced: the checkpoint's {} classes → {} (newly initialised)",
                                t.shape()[0],
                                vit.cfg.num_classes
                            ));
                        }
                        store.value(own).clone()
                    } else {
                        t.clone()
                    }
                }
                _ => t.clone(),
            };
            tensors.push((name.clone(), t));
        }
        if !self.tensors.contains_key("head.weight") {
            for id in [vit.head.weight, vit.head.bias] {
                tensors.push((store.name(id).to_string(), store.value(id).clone()));
            }
            notes.push(format!(
                "the checkpoint has no head: a new one for {} classes",
                vit.cfg.num_classes
            ));
        }
        if !self.unused.is_empty() {
            notes.push(format!("not used: {}", self.unused.join(", ")));
        }
        checkpoint::assign_params(path, &tensors, store)?;
        Ok(notes)
    }
}

/// `(g, no_embed_class)` of a position embedding with `t` rows: `t = 1 + g²` (class token
/// included, timm's default) or `t = g²`.
fn native_grid(t: usize) -> Option<(usize, bool)> {
    let root = |n: usize| (0..=n).find(|g| g * g >= n).filter(|g| g * g == n);
    root(t.saturating_sub(1))
        .filter(|_| t > 1)
        .map(|g| (g, false))
        .or_else(|| root(t).map(|g| (g, true)))
}

/// Resample `pos [1, T, D]` to `want [1, T', D]`: the class position (when there is one) kept,
/// the square patch grid resampled by [`resample_bicubic_aa`].
pub fn resample_pos_embed(pos: &Tensor, want: &[usize], no_embed_class: bool) -> Result<Tensor> {
    let (t, d) = (pos.shape()[1], pos.shape()[2]);
    let prefix = usize::from(!no_embed_class);
    let (Some((g_old, _)), Some((g_new, _))) = (native_grid(t), native_grid(want[1])) else {
        return Err(Error::config(format!(
            "{t} or {} positions is not a square grid",
            want[1]
        )));
    };
    let g_old = if prefix == 1 { g_old } else { (t as f64).sqrt() as usize };
    let g_new = if prefix == 1 {
        g_new
    } else {
        (want[1] as f64).sqrt() as usize
    };
    if g_old * g_old + prefix != t || g_new * g_new + prefix != want[1] || want[2] != d {
        return Err(Error::shape(
            "resample_pos_embed",
            pos.shape(),
            want,
            "the class position and a square patch grid must match",
        ));
    }
    let v = pos.values()?;
    let mut out = v[..prefix * d].to_vec();
    // [g, g, D] → per feature a g×g plane, resampled, back to [g', g', D].
    let mut plane = vec![0f32; g_old * g_old];
    let mut grid = vec![0f32; g_new * g_new * d];
    for f in 0..d {
        for (i, p) in plane.iter_mut().enumerate() {
            *p = v[(prefix + i) * d + f];
        }
        let r = resample_bicubic_aa(&plane, g_old, g_old, g_new, g_new);
        for (i, x) in r.into_iter().enumerate() {
            grid[i * d + f] = x;
        }
    }
    out.extend(grid);
    Tensor::from_vec(out, want)
}

/// PyTorch's `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` (the same as
/// PIL's `BICUBIC`): separable, each output sample a normalised sum of the input under a cubic
/// kernel with a = −0.5 whose support widens by the scale when shrinking (so downsampling
/// averages rather than aliases); taps outside the image are dropped, not clamped. Width
/// first, then height, as PyTorch's separable kernel. `plane` is `h × w`, row-major.
pub fn resample_bicubic_aa(plane: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let wx = aa_weights(w, out_w);
    let wy = aa_weights(h, out_h);
    let mut tmp = vec![0f32; h * out_w];
    for y in 0..h {
        for (x, (start, ws)) in wx.iter().enumerate() {
            tmp[y * out_w + x] = ws.iter().enumerate().map(|(j, k)| k * plane[y * w + start + j]).sum();
        }
    }
    let mut out = vec![0f32; out_h * out_w];
    for (y, (start, ws)) in wy.iter().enumerate() {
        for x in 0..out_w {
            out[y * out_w + x] = ws
                .iter()
                .enumerate()
                .map(|(j, k)| k * tmp[(start + j) * out_w + x])
                .sum();
        }
    }
    out
}

/// For each output index: the first input index and the normalised weights (PyTorch's
/// `_compute_indices_min_size_weights_aa` with the bicubic filter of a = −0.5).
fn aa_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let cubic = |x: f64| {
        let (a, x) = (-0.5, x.abs());
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out as f64;
    let support = 2.0 * scale.max(1.0);
    let invscale = 1.0 / scale.max(1.0);
    (0..n_out)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(n_in as i64) as usize;
            let ws: Vec<f64> = (xmin..xmax)
                .map(|j| cubic((j as f64 - center + 0.5) * invscale))
                .collect();
            let total: f64 = ws.iter().sum();
            let ws = ws
                .iter()
                .map(|w| if total != 0.0 { w / total } else { *w } as f32)
                .collect();
            (xmin, ws)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_timm() {
        assert_eq!(hf_to_timm("vit.embeddings.cls_token").as_deref(), Some("cls_token"));
        assert_eq!(
            hf_to_timm("vit.encoder.layer.11.attention.attention.key.bias").as_deref(),
            Some("blocks.11.attn.qkv.k.bias")
        );
        assert_eq!(
            hf_to_timm("encoder.layer.0.output.dense.weight").as_deref(),
            Some("blocks.0.mlp.fc2.weight")
        );
        assert_eq!(hf_to_timm("pooler.dense.weight"), None);
    }

    #[test]
    fn resampling_keeps_a_constant_and_the_same_size_is_the_identity() {
        let plane: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let same = resample_bicubic_aa(&plane, 4, 4, 4, 4);
        assert!(same.iter().zip(&plane).all(|(a, b)| (a - b).abs() < 1e-5));
        for (n, m) in [(4, 7), (7, 3)] {
            let r = resample_bicubic_aa(&vec![2.5; n * n], n, n, m, m);
            assert!(r.iter().all(|v| (v - 2.5).abs() < 1e-5), "{r:?}");
        }
        assert_eq!(native_grid(197), Some((14, false)));
        assert_eq!(native_grid(196), Some((14, true)));
        assert_eq!(native_grid(10), Some((3, false)));
        assert_eq!(native_grid(7), None);
    }
}
