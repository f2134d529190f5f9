//! Checkpoints: named f32 tensors and string metadata in a [safetensors] file.
//!
//! # The format
//! ```text
//! [ n: u64 little-endian ][ header: n bytes of JSON, space-padded to a multiple of 8 ][ data ]
//! header = { "__metadata__": { "key": "value", ... },
//!            "<name>": { "dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end] }, ... }
//! ```
//! Each tensor's bytes are `data[begin..end]`: its elements in row-major (C) order, each an IEEE
//! f32 in little-endian byte order, `end − begin = 4·∏dᵢ`. Names are stored exactly as given —
//! timm's (`blocks.0.attn.qkv.weight`, `cls_token`, ...) for a ViT — so PyTorch reads a vitcore
//! checkpoint with `safetensors.torch.load_file(path)` and `model.load_state_dict(...)`, and the
//! other way round. The format has no code in it (unlike pickle), and every offset is checked on
//! load, so a corrupt or truncated file is an error, not a crash.
//!
//! # Atomic save
//! A run killed while writing must not leave a half-written checkpoint under the real name (the
//! one `--resume` would read). [`save`] writes `<path>.tmp-<pid>-<n>` in the same directory,
//! fsyncs it, then `rename`s it over `path` ([`crate::fsutil::replace_atomically`]), so `path` is
//! always either the old checkpoint or the complete new one.
//!
//! # Only finite numbers
//! [`load`] rejects a tensor holding NaN or ±Inf, naming it and the first bad element: a diverged
//! run's parameters (vitcore's or PyTorch's) would otherwise give plausible-looking predictions
//! (argmax of NaN is class 0) instead of an error.
//!
//! # Loading into a model
//! [`load_into`] requires every parameter of the [`ParamStore`] to be present with the same shape,
//! and no tensor the model does not have. It validates everything before it changes anything, so a
//! mismatched checkpoint leaves the model as it was, and the error lists every problem: each
//! parameter with both shapes, the missing names and the unexpected ones. Tensors and metadata
//! under [`STATE_PREFIX`] (`optim.`) are optimiser / scheduler state and are skipped here; see
//! [`crate::optim::Adam::load_state`]. So are the weights' moving average (`ema.`,
//! [`crate::optim::Ema`]) and the label audit's margins (`margins.`).
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use crate::autograd::ParamStore;
use crate::backend::cpu::pool;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::optim::STATE_PREFIX;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensorError, View};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// A tensor as safetensors sees it: f32, shape, little-endian bytes.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            // The in-memory layout already is the file's: no copy.
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Names of at most `max` items, then how many more.
fn list(names: &[String], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(", ... and {} more", names.len() - max));
    }
    s
}

/// Write `tensors` and `metadata` to `path` atomically (see the module documentation).
/// Names must be unique and non-empty (`__metadata__` is reserved by the format).
pub fn save(path: impl AsRef<Path>, tensors: &[(String, &Tensor)], metadata: &HashMap<String, String>) -> Result<()> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    for (name, _) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(Error::checkpoint(
                path,
                format!("invalid tensor name `{name}` (must be non-empty and not `__metadata__`)"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::checkpoint(path, format!("tensor name `{name}` is given twice")));
        }
    }
    // GPU tensors are read back first (a no-op share for CPU ones).
    let host = tensors
        .iter()
        .map(|(_, t)| t.to_device(Device::Cpu))
        .collect::<Result<Vec<Tensor>>>()?;
    let views = tensors.iter().zip(&host).map(|((name, _), t)| {
        (
            name.as_str(),
            F32View {
                shape: t.shape(),
                data: t.data(),
            },
        )
    });
    let info = (!metadata.is_empty()).then(|| metadata.clone());
    fsutil::replace_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, &info, tmp).map_err(|e| match e {
            SafeTensorError::IoError(e) => Error::io(
                path,
                io::Error::new(e.kind(), format!("writing temporary file {}: {e}", tmp.display())),
            ),
            other => Error::checkpoint(path, format!("cannot serialise: {other:?}")),
        })
    })
}

/// Save every parameter of `params` under its name, plus `extra` tensors (e.g. the optimiser's
/// [`crate::optim::Adam::state_tensors`]).
pub fn save_params(
    path: impl AsRef<Path>,
    params: &ParamStore,
    extra: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(String, &Tensor)> = params
        .ids()
        .map(|id| (params.name(id).to_string(), params.value(id)))
        .collect();
    tensors.extend(extra.iter().map(|(n, t)| (n.clone(), t)));
    save(path, &tensors, metadata)
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "shorter than the 8-byte header length".into(),
        SafeTensorError::InvalidHeaderLength => "the header length is larger than the file (truncated?)".into(),
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".into(),
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::JsonError(_) => "the header is not valid safetensors JSON".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the data section does not have the size the header declares (truncated?)".into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}` has invalid data offsets")
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's byte range does not match its shape and dtype".into(),
        SafeTensorError::ValidationOverflow => "a tensor's size overflows".into(),
        other => format!("{other:?}"),
    }
}

/// What a checkpoint holds: named tensors (in file order) and string metadata.
pub type Contents = (Vec<(String, Tensor)>, HashMap<String, String>);

/// Read a checkpoint: its tensors in file order, and its metadata. Only f32 tensors are accepted.
pub fn load(path: impl AsRef<Path>) -> Result<Contents> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (n, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a valid safetensors file ({} bytes): {}", bytes.len(), describe(&e)),
        )
    })?;
    // read_metadata checked that the offsets tile the data section exactly.
    let data = &bytes[8 + n..];
    let mut infos: Vec<_> = header.tensors().into_iter().collect();
    infos.sort_by_key(|(_, info)| info.data_offsets);
    let mut out = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        if info.dtype != Dtype::F32 {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}, expected F32 (vitcore stores f32 only)",
                    info.dtype
                ),
            ));
        }
        let (begin, end) = info.data_offsets;
        let raw = &data[begin..end];
        let mut v = pool::take(raw.len() / 4);
        for (x, b) in v.iter_mut().zip(raw.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{name}` holds {x} at element {i} of {} (shape {:?}): a checkpoint must \
                     hold finite numbers only (was it saved from a diverged run?)",
                    v.len(),
                    info.shape
                ),
            ));
        }
        let t =
            Tensor::from_vec(v, &info.shape).map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        out.push((name, t));
    }
    let metadata = header.metadata().clone().unwrap_or_default();
    Ok((out, metadata))
}

/// Read only a checkpoint's metadata (its header), not its tensors: cheap, for deciding what to
/// do before loading anything.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let bad = |msg: String| Error::checkpoint(path, format!("not a valid safetensors file: {msg}"));
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad(describe(&SafeTensorError::HeaderTooSmall)))?;
    let n = u64::from_le_bytes(n);
    if n > file_len.saturating_sub(8) {
        return Err(bad(describe(&SafeTensorError::InvalidHeaderLength)));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad(describe(&SafeTensorError::InvalidHeader)))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Set every parameter of `params` from `tensors` (names under `optim.` and `margins.`, training
/// state, are skipped), all or
/// nothing: on any missing, unexpected or misshapen tensor the store is left unchanged and the
/// error (naming `path`) lists every problem.
pub fn assign_params(path: impl AsRef<Path>, tensors: &[(String, Tensor)], params: &mut ParamStore) -> Result<()> {
    let path = path.as_ref();
    let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
    let mut duplicated = Vec::new();
    for (name, t) in tensors {
        if name.starts_with(STATE_PREFIX)
            || name.starts_with(crate::train::margins::PREFIX)
            || name.starts_with(crate::optim::ema::PREFIX)
        {
            continue;
        }
        if by_name.insert(name.as_str(), t).is_some() {
            duplicated.push(name.clone());
        }
    }
    let mut plan = Vec::with_capacity(params.len());
    let (mut mismatched, mut missing) = (Vec::new(), Vec::new());
    for id in params.ids() {
        let name = params.name(id);
        let expect = params.value(id).shape();
        match by_name.remove(name) {
            None => missing.push(name.to_string()),
            Some(t) if t.shape() != expect => mismatched.push(format!(
                "parameter `{name}`: the model expects shape {expect:?}, the checkpoint has {:?}",
                t.shape()
            )),
            // Moved to the parameter's device now, so that applying the plan cannot fail.
            Some(t) => plan.push((id, t.to_device(params.value(id).device())?)),
        }
    }
    let mut unexpected: Vec<String> = by_name.keys().map(|s| s.to_string()).collect();
    unexpected.sort();
    let mut problems = mismatched;
    if !missing.is_empty() {
        problems.push(format!(
            "{} parameter(s) missing from the checkpoint: {}",
            missing.len(),
            list(&missing, 20)
        ));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "{} unexpected tensor(s) the model does not have: {}",
            unexpected.len(),
            list(&unexpected, 20)
        ));
    }
    if !duplicated.is_empty() {
        problems.push(format!("tensor(s) given twice: {}", list(&duplicated, 20)));
    }
    if !problems.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!("does not match the model: {}", problems.join("; ")),
        ));
    }
    for (id, t) in plan {
        // Shapes were checked above, so this cannot fail half-way.
        params.set(id, t)?;
    }
    Ok(())
}

/// Load the parameters of `params` from the checkpoint at `path` (see [`assign_params`]) and
/// return its metadata.
pub fn load_into(path: impl AsRef<Path>, params: &mut ParamStore) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let (tensors, metadata) = load(path)?;
    assign_params(path, &tensors, params)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(data, shape).unwrap()
    }

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            (
                "blocks.0.attn.qkv.weight".into(),
                t((0..24).map(|i| i as f32 * 0.5 - 3.0).collect(), &[6, 4]),
            ),
            (
                "blocks.0.attn.qkv.bias".into(),
                t(vec![1.0, -0.0, f32::MIN_POSITIVE, 1e30, -7.25, 0.1], &[6]),
            ),
            ("cls_token".into(), t(vec![0.25, 0.5, 0.75, 1.0], &[1, 1, 4])),
            ("scalar".into(), Tensor::scalar(42.0)),
            ("empty".into(), t(vec![], &[0, 3])),
        ]
    }

    fn refs(v: &[(String, Tensor)]) -> Vec<(String, &Tensor)> {
        v.iter().map(|(n, t)| (n.clone(), t)).collect()
    }

    fn store() -> ParamStore {
        let mut p = ParamStore::new();
        p.add("patch_embed.proj.weight", Tensor::full(&[4, 3], 1.0)).unwrap();
        p.add("head.weight", Tensor::full(&[2, 4], 2.0)).unwrap();
        p.add("head.bias", Tensor::full(&[2], 3.0)).unwrap();
        p
    }

    #[test]
    fn round_trip_names_shapes_values_metadata() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("model.safetensors");
        let tensors = sample();
        let meta = HashMap::from([
            ("epoch".to_string(), "7".to_string()),
            ("config".to_string(), r#"{"dim": 192, "note": "ünïcode"}"#.to_string()),
        ]);
        save(&path, &refs(&tensors), &meta).unwrap();
        let (back, meta_back) = load(&path).unwrap();
        assert_eq!(meta_back, meta);
        let mut want: Vec<_> = tensors.iter().collect();
        want.sort_by(|a, b| a.0.cmp(&b.0)); // file order: by name (all f32)
        assert_eq!(back.len(), want.len());
        for ((name, got), (wname, w)) in back.iter().zip(want) {
            assert_eq!(name, wname);
            assert_eq!(got.shape(), w.shape(), "{name}");
            let bits = |x: &Tensor| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(w), "{name}: values must be bit-exact");
        }
        // Nothing but the checkpoint is left in the directory.
        assert_eq!(dir.files(), ["model.safetensors"]);
    }

    #[test]
    fn file_layout_is_plain_safetensors() {
        // Check the bytes against the format spec directly (what PyTorch's reader relies on).
        let dir = TempDir::new("layout");
        let path = dir.0.join("a.safetensors");
        let x = t(vec![1.0, -2.0, 0.5], &[3, 1]);
        save(&path, &[("blocks.0.attn.qkv.weight".into(), &x)], &HashMap::new()).unwrap();
        let bytes = fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let entry = &header["blocks.0.attn.qkv.weight"];
        assert_eq!(entry["dtype"], "F32");
        assert_eq!(entry["shape"], serde_json::json!([3, 1]));
        assert_eq!(entry["data_offsets"], serde_json::json!([0, 12]));
        assert_eq!(
            &bytes[8 + n..],
            &[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f],
            "little-endian f32, row-major"
        );
    }

    #[test]
    fn overwrite_replaces_and_leaves_no_temp_file() {
        let dir = TempDir::new("overwrite");
        let path = dir.0.join("ckpt.safetensors");
        let a = t(vec![1.0; 4], &[4]);
        let b = t(vec![2.0; 6], &[2, 3]);
        save(&path, &[("w".into(), &a)], &HashMap::new()).unwrap();
        save(&path, &[("w".into(), &b)], &HashMap::new()).unwrap();
        let (back, meta) = load(&path).unwrap();
        assert_eq!(back[0].1.shape(), &[2, 3]);
        assert_eq!(back[0].1.data(), b.data());
        assert!(meta.is_empty());
        assert_eq!(dir.files(), ["ckpt.safetensors"]);
    }

    #[test]
    fn failed_write_names_the_path() {
        let dir = TempDir::new("nodir");
        let path = dir.0.join("no").join("such").join("dir").join("ckpt.safetensors");
        let x = Tensor::ones(&[2]);
        let e = save(&path, &[("w".into(), &x)], &HashMap::new()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(dir.files().is_empty());
        // A read of a file that does not exist also names it.
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn bad_names_are_rejected_before_writing() {
        let dir = TempDir::new("names");
        let path = dir.0.join("x.safetensors");
        let x = Tensor::ones(&[1]);
        for names in [vec!["a", "a"], vec![""], vec!["__metadata__"]] {
            let list: Vec<(String, &Tensor)> = names.iter().map(|n| (n.to_string(), &x)).collect();
            let msg = save(&path, &list, &HashMap::new()).unwrap_err().to_string();
            assert!(msg.contains("x.safetensors"), "{msg}");
        }
        assert!(dir.files().is_empty());
    }

    #[test]
    fn truncated_or_corrupt_file_is_an_error_naming_the_path() {
        let dir = TempDir::new("trunc");
        let good = dir.0.join("good.safetensors");
        save(&good, &refs(&sample()), &HashMap::from([("k".into(), "v".into())])).unwrap();
        let bytes = fs::read(&good).unwrap();
        let bad = dir.0.join("bad.safetensors");
        let mut cases: Vec<Vec<u8>> = [0, 1, 7, 8, 9, 16, bytes.len() / 2, bytes.len() - 1]
            .iter()
            .map(|&k| bytes[..k].to_vec())
            .collect();
        let mut extra = bytes.clone();
        extra.push(0);
        cases.push(extra);
        cases.push(b"definitely not a checkpoint at all".to_vec());
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push(huge);
        let mut garbled = bytes.clone();
        garbled[9] = b'#'; // break the JSON
        cases.push(garbled);
        for (i, case) in cases.into_iter().enumerate() {
            fs::write(&bad, &case).unwrap();
            let msg = load(&bad).unwrap_err().to_string();
            assert!(msg.contains("bad.safetensors"), "case {i}: {msg}");
            let mut params = store();
            assert!(load_into(&bad, &mut params).is_err(), "case {i}");
        }
    }

    #[test]
    fn non_f32_dtype_is_an_error_naming_the_tensor() {
        let header = r#"{"blocks.0.norm1.weight":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&1.0f64.to_le_bytes());
        let dir = TempDir::new("dtype");
        let path = dir.0.join("f64.safetensors");
        fs::write(&path, bytes).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("blocks.0.norm1.weight") && msg.contains("F64") && msg.contains("f64.safetensors"),
            "{msg}"
        );
    }

    #[test]
    fn non_finite_values_are_rejected_naming_the_tensor_and_the_element() {
        let dir = TempDir::new("nonfinite");
        let path = dir.0.join("nan.safetensors");
        for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
            let ok = t(vec![1.0, 2.0], &[2]);
            let b = t(vec![0.5, 0.25, bad, 1.0], &[2, 2]);
            save(
                &path,
                &[("cls_token".into(), &ok), ("head.bias".into(), &b)],
                &HashMap::new(),
            )
            .unwrap();
            let msg = load(&path).unwrap_err().to_string();
            for needle in ["nan.safetensors", "`head.bias`", shown, "element 2 of 4", "finite"] {
                assert!(msg.contains(needle), "`{needle}` not in: {msg}");
            }
            let mut params = store();
            assert!(load_into(&path, &mut params).is_err());
        }
    }

    #[test]
    fn read_metadata_reads_the_header_only() {
        let dir = TempDir::new("meta");
        let path = dir.0.join("m.safetensors");
        let meta = HashMap::from([("epoch".to_string(), "3".to_string())]);
        save(&path, &refs(&sample()), &meta).unwrap();
        assert_eq!(read_metadata(&path).unwrap(), meta);
        save(&path, &refs(&sample()), &HashMap::new()).unwrap();
        assert!(read_metadata(&path).unwrap().is_empty());
        fs::write(&path, [1u8, 2, 3]).unwrap();
        let msg = read_metadata(&path).unwrap_err().to_string();
        assert!(
            msg.contains("m.safetensors") && msg.contains("not a valid safetensors"),
            "{msg}"
        );
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        fs::write(&path, huge).unwrap();
        assert!(read_metadata(&path).is_err());
    }

    #[test]
    fn load_into_sets_every_parameter() {
        let dir = TempDir::new("into");
        let path = dir.0.join("m.safetensors");
        let mut src = store();
        for id in src.ids().collect::<Vec<_>>() {
            let n = src.value(id).numel();
            let shape = src.value(id).shape().to_vec();
            src.set(id, t((0..n).map(|i| i as f32 + 0.5).collect(), &shape))
                .unwrap();
        }
        // Optimiser state in the same file is skipped by load_into.
        let extra = vec![("optim.m.head.bias".to_string(), Tensor::zeros(&[2]))];
        save_params(&path, &src, &extra, &HashMap::from([("step".into(), "3".into())])).unwrap();
        let mut dst = store();
        let meta = load_into(&path, &mut dst).unwrap();
        assert_eq!(meta["step"], "3");
        for id in dst.ids() {
            assert_eq!(dst.value(id).data(), src.value(id).data(), "{}", dst.name(id));
        }
    }

    #[test]
    fn load_into_shape_mismatch_names_everything_and_changes_nothing() {
        let dir = TempDir::new("mismatch");
        let path = dir.0.join("other.safetensors");
        let w = Tensor::full(&[4, 3], 9.0); // matches: must still not be applied
        let head = Tensor::full(&[10, 4], 9.0); // the model has [2, 4]
        let extra = Tensor::full(&[1], 9.0);
        save(
            &path,
            &[
                ("patch_embed.proj.weight".into(), &w),
                ("head.weight".into(), &head),
                ("pos_embed".into(), &extra),
            ],
            &HashMap::new(),
        )
        .unwrap();
        let mut params = store();
        let before: Vec<Vec<f32>> = params.ids().map(|id| params.value(id).to_vec()).collect();
        let msg = load_into(&path, &mut params).unwrap_err().to_string();
        for needle in [
            "other.safetensors",
            "`head.weight`",
            "[2, 4]",
            "[10, 4]",
            "missing from the checkpoint: `head.bias`",
            "unexpected tensor(s) the model does not have: `pos_embed`",
        ] {
            assert!(msg.contains(needle), "`{needle}` not in: {msg}");
        }
        let after: Vec<Vec<f32>> = params.ids().map(|id| params.value(id).to_vec()).collect();
        assert_eq!(before, after, "a failed load must leave the store unchanged");
    }
}
