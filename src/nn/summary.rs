//! `vitcore summary`: every layer of a ViT by its parameter name (timm's), its output shape, its
//! parameter count and its FLOPs per image, with totals — what `torchinfo.summary` and Keras'
//! `model.summary()` print.
//!
//! FLOPs count the matrix products, a multiply–add as 2 (so a linear layer from `i` to `o`
//! features costs `2·i·o` per token, and the attention core `2·T·T·Dh` for q·kᵀ and again for
//! a·v, per head). Norms, softmax, GELU and the residual adds are elementwise and left out, as
//! torchinfo and fvcore do; they are a few percent here. A training step costs about three times
//! the forward (the backward computes two products per forward product).

use super::layers::Linear;
use super::Vit;
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
    let (n, t, d, m, h) = (cfg.num_patches(), cfg.tokens(), cfg.embed_dim, cfg.mlp_dim, cfg.heads);
    let numel = |ids: &[ParamId]| ids.iter().map(|&id| store.value(id).numel()).sum::<usize>();
    let linear = |l: &Linear| numel(&[l.weight, l.bias]);
    let row = |name: String, kind: &str, output: Vec<usize>, params, flops: usize| Layer {
        name,
        kind: kind.to_string(),
        output,
        params,
        flops: flops as u64,
    };
    let cpp = cfg.channels * cfg.patch * cfg.patch;
    let mut rows = vec![
        row(
            "patch_embed.proj".into(),
            "PatchEmbed",
            vec![n, d],
            linear(&vit.patch_embed.proj),
            2 * n * cpp * d,
        ),
        row("cls_token".into(), "Parameter", vec![1, d], numel(&[vit.cls_token]), 0),
        row("pos_embed".into(), "Parameter", vec![t, d], numel(&[vit.pos_embed]), 0),
    ];
    for (i, b) in vit.blocks.iter().enumerate() {
        let p = format!("blocks.{i}");
        rows.extend([
            row(
                format!("{p}.norm1"),
                "LayerNorm",
                vec![t, d],
                numel(&[b.norm1.weight, b.norm1.bias]),
                0,
            ),
            row(
                format!("{p}.attn.qkv"),
                "Linear",
                vec![t, 3 * d],
                linear(&b.attn.qkv),
                2 * t * d * 3 * d,
            ),
            row(
                format!("{p}.attn"),
                &format!("softmax(q·kᵀ/√Dh)·v, {h} heads"),
                vec![t, d],
                0,
                2 * 2 * t * t * d,
            ),
            row(
                format!("{p}.attn.proj"),
                "Linear",
                vec![t, d],
                linear(&b.attn.proj),
                2 * t * d * d,
            ),
            row(
                format!("{p}.norm2"),
                "LayerNorm",
                vec![t, d],
                numel(&[b.norm2.weight, b.norm2.bias]),
                0,
            ),
            row(
                format!("{p}.mlp.fc1"),
                "Linear + GELU",
                vec![t, m],
                linear(&b.mlp.fc1),
                2 * t * d * m,
            ),
            row(
                format!("{p}.mlp.fc2"),
                "Linear",
                vec![t, d],
                linear(&b.mlp.fc2),
                2 * t * m * d,
            ),
        ]);
    }
    let k = cfg.num_classes;
    rows.push(row(
        "norm".into(),
        "LayerNorm (class token)",
        vec![d],
        numel(&[vit.norm.weight, vit.norm.bias]),
        0,
    ));
    rows.push(row("head".into(), "Linear", vec![k], linear(&vit.head), 2 * d * k));
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
        "input: [{}, {}, {}] (C, H, W); {} patches of {}x{} + the class token = {} tokens of {} features\n",
        cfg.channels,
        cfg.image_height,
        cfg.image_width,
        cfg.num_patches(),
        cfg.patch,
        cfg.patch,
        cfg.tokens(),
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
