//! `vitcore summary`: every layer of a ViT by its parameter name (timm's), its output shape, its
//! parameter count and its FLOPs per image, with totals — what `torchinfo.summary` and Keras'
//! `model.summary()` print.
//!
//! FLOPs count the matrix products, a multiply–add as 2 (so a linear layer from `i` to `o`
//! features costs `2·i·o` per token, and the attention core `2·T·T·Dh` for q·kᵀ and again for
//! a·v, per head). Norms, softmax, GELU and the residual adds are elementwise and left out, as
//! torchinfo and fvcore do; they are a few percent here. A training step costs about three times
//! the forward (the backward computes two products per forward product).

use super::layers::{LayerNorm, Linear};
use super::{GlobalPool, Vit};
use crate::autograd::{ParamId, ParamStore};

/// One row of the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// timm's name of the module (its parameters are `{name}.weight`, ...), or of the
    /// parameter itself (`cls_token`, `pos_embed`).
    pub name: String,
    /// What it computes (`Linear`, `LayerNorm`, ...).
    pub kind: String,
    /// Its output for one image (no batch axis).
    pub output: Vec<usize>,
    pub params: usize,
    pub flops: u64,
}

/// The layers of `vit` in the order the forward runs them; parameter counts read from `store`.
pub fn layers(vit: &Vit, store: &ParamStore) -> Vec<Layer> {
    let cfg = &vit.cfg;
    let (n, t, d, m, h) = (cfg.num_patches(), vit.tokens(), cfg.embed_dim, cfg.mlp_dim, cfg.heads);
    // q, k and v are each h·Dk wide (D unless the heads have a key width of their own).
    let inner = h * vit.key_dim();
    let numel = |ids: &[ParamId]| ids.iter().map(|&id| store.value(id).numel()).sum::<usize>();
    let row = |name: &str, kind: &str, output: Vec<usize>, params, flops: usize| Layer {
        name: name.to_string(),
        kind: kind.to_string(),
        output,
        params,
        flops: flops as u64,
    };
    // A linear layer applied to `rows` tokens, `i` → `o` features.
    let linear = |name: &str, kind: &str, l: &Linear, rows: usize, (i, o): (usize, usize)| {
        let out = if rows == 1 { vec![o] } else { vec![rows, o] };
        row(name, kind, out, numel(&[l.weight, l.bias]), 2 * rows * i * o)
    };
    let norm =
        |name: &str, kind: &str, l: &LayerNorm, out: Vec<usize>| row(name, kind, out, numel(&[l.weight, l.bias]), 0);
    let cpp = cfg.channels * cfg.patch * cfg.patch;
    let mut rows = vec![linear(
        "patch_embed.proj",
        "PatchEmbed",
        &vit.patch_embed.proj,
        n,
        (cpp, d),
    )];
    if let Some(cls) = vit.cls_token {
        rows.push(row("cls_token", "Parameter", vec![1, d], numel(&[cls]), 0));
    }
    // [T, D], or [N, D] when it covers the patches only.
    rows.push(row(
        "pos_embed",
        "Parameter",
        store.value(vit.pos_embed).shape()[1..].to_vec(),
        numel(&[vit.pos_embed]),
        0,
    ));
    for (i, b) in vit.blocks.iter().enumerate() {
        let p = |s: &str| format!("blocks.{i}.{s}");
        let core = format!("softmax(q·kᵀ/√Dh)·v, {h} heads of {}", vit.key_dim());
        rows.extend([
            norm(&p("norm1"), "LayerNorm", &b.norm1, vec![t, d]),
            linear(&p("attn.qkv"), "Linear", &b.attn.qkv, t, (d, 3 * inner)),
            // q·kᵀ and a·v: 2·T·T·Dh each per head, 2·T·T·h·Dh over the heads.
            row(&p("attn"), &core, vec![t, inner], 0, 2 * 2 * t * t * inner),
            linear(&p("attn.proj"), "Linear", &b.attn.proj, t, (inner, d)),
            norm(&p("norm2"), "LayerNorm", &b.norm2, vec![t, d]),
            linear(&p("mlp.fc1"), "Linear + GELU", &b.mlp.fc1, t, (d, m)),
            linear(&p("mlp.fc2"), "Linear", &b.mlp.fc2, t, (m, d)),
        ]);
    }
    rows.push(match vit.opts.global_pool {
        GlobalPool::Token => norm("norm", "LayerNorm (class token)", &vit.norm, vec![d]),
        GlobalPool::Avg => norm("fc_norm", "mean of patches + LayerNorm", &vit.norm, vec![d]),
    });
    let head = if vit.opts.softmax_head {
        "Linear + softmax"
    } else {
        "Linear"
    };
    rows.push(linear("head", head, &vit.head, 1, (d, cfg.num_classes)));
    rows
}

/// `1234567` as `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary as a text table with totals (what `vitcore summary` prints).
pub fn table(vit: &Vit, store: &ParamStore) -> String {
    let rows = layers(vit, store);
    let shape = |s: &[usize]| format!("[{}]", s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "));
    let wide = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
    let kind_w = rows.iter().map(|r| r.kind.chars().count()).max().unwrap_or(0);
    let mut s = format!(
        "{:wide$}  {:kind_w$}  {:>14}  {:>10}  {:>13}\n",
        "layer", "type", "output", "params", "FLOPs"
    );
    let rule = "-".repeat(wide + kind_w + 14 + 10 + 13 + 8) + "\n";
    s += &rule;
    for r in &rows {
        // `{:width$}` pads by chars, and "ᵀ" and "√" are one char each.
        s += &format!(
            "{:wide$}  {:kind_w$}  {:>14}  {:>10}  {:>13}\n",
            r.name,
            r.kind,
            shape(&r.output),
            thousands(r.params as u64),
            thousands(r.flops)
        );
    }
    s += &rule;
    let params: usize = rows.iter().map(|r| r.params).sum();
    let flops: u64 = rows.iter().map(|r| r.flops).sum();
    let cfg = &vit.cfg;
    s += &format!(
        "input: [{}, {}, {}] (C, H, W); {} patches of {}x{}{} = {} tokens of {} features\n",
        cfg.channels,
        cfg.image_height,
        cfg.image_width,
        cfg.num_patches(),
        cfg.patch,
        cfg.patch,
        if vit.cls_token.is_some() {
            " + the class token"
        } else {
            ", no class token"
        },
        vit.tokens(),
        cfg.embed_dim
    );
    s += &format!(
        "total parameters: {} ({:.2} MB as f32)\n",
        thousands(params as u64),
        params as f64 * 4.0 / 1e6
    );
    s += &format!(
        "forward FLOPs per image: {} ({:.2} MFLOPs; matrix products, a multiply-add counted as 2; a training step is about 3x)\n",
        thousands(flops),
        flops as f64 / 1e6
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, VitConfig};
    use crate::ops::GeluKind;

    #[test]
    fn rows_cover_every_parameter_once_and_count_the_products() {
        let cfg = VitConfig {
            image_height: 28,
            image_width: 28,
            channels: 1,
            patch: 7,
            embed_dim: 8,
            depth: 2,
            heads: 2,
            mlp_dim: 12,
            num_classes: 10,
            dropout: 0.0,
            attn_dropout: 0.0,
            ln_eps: 1e-6,
            gelu: GeluKind::Erf,
            init: Init::Timm,
            identical_blocks: false,
        };
        let mut store = ParamStore::new();
        let vit = Vit::new(cfg, &mut store, 1).unwrap();
        let rows = layers(&vit, &store);
        assert_eq!(rows.iter().map(|r| r.params).sum::<usize>(), store.numel());
        // Every parameter's module is a row, by timm's name.
        for id in store.ids() {
            let name = store.name(id);
            let module = name.trim_end_matches(".weight").trim_end_matches(".bias");
            assert!(rows.iter().any(|r| r.name == module), "{name} has no row");
        }
        let qkv = rows.iter().find(|r| r.name == "blocks.1.attn.qkv").unwrap();
        assert_eq!(
            (qkv.output.clone(), qkv.params, qkv.flops),
            (vec![17, 24], 8 * 24 + 24, 2 * 17 * 8 * 24)
        );
        let core = rows.iter().find(|r| r.name == "blocks.0.attn").unwrap();
        assert_eq!(core.flops, 2 * 2 * 17 * 17 * 8);
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert!(table(&vit, &store).contains(&format!("total parameters: {}", thousands(store.numel() as u64))));
    }
}
