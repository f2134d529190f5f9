//! Photos in one folder per class: the layout of torchvision's `ImageFolder` and Keras's
//! `image_dataset_from_directory`.
//!
//! ```text
//! DIR/daisy/100080576_f52e8ee070_n.jpg        class names are the folder names, sorted
//! DIR/daisy/more/1234.png                     (sub-folders of a class belong to it)
//! DIR/roses/...                               → labels 0, 1, ... in that order
//! ```
//! - [`scan`] lists the classes and their image files (`.jpg`, `.jpeg`, `.png`, any case),
//!   sorted, skipping hidden entries (`.DS_Store`, `.git/`) and other files (`Thumbs.db`,
//!   `*.txt`) without a word. Errors: no such folder, fewer than two classes, a class with no
//!   image, two class folders whose names differ only in case (one would shadow the other on
//!   a case-insensitive file system, and a user surely meant one class), more than 256 classes.
//! - [`load`] decodes and resizes every file in parallel (rayon) to the model's input
//!   ([`decode`]); the result is one in-memory [`Dataset`] of `u8` pixels, decoded once per run
//!   and reused by every epoch. A file that cannot be read is skipped and reported in
//!   [`Loaded::skipped`] (or, with `strict`, is an error).
//! - [`split`] draws the seeded, stratified train / validation / test split.

pub mod decode;
pub mod split;

pub use decode::{PhotoShape, ResizeMode};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::Dataset;
use crate::error::{Error, Result};

/// Extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The most classes a [`Dataset`] holds (its labels are bytes).
pub const MAX_CLASSES: usize = 256;

/// A scanned class folder tree: the class names and every image file with its label.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names (folder names), sorted; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// `(file, label)`, by class then by path.
    pub files: Vec<(PathBuf, u8)>,
}

/// Whether a directory entry is hidden (its name starts with a dot).
fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'))
}

/// Whether a file's extension is one of [`IMAGE_EXTENSIONS`].
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect::<Result<Vec<_>>>()?;
    entries.retain(|p| !hidden(p));
    entries.sort();
    Ok(entries)
}

/// Every image file under `dir` (recursively, sorted; hidden entries skipped).
pub fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in read_dir_sorted(dir)? {
        if p.is_dir() {
            image_files(&p, out)?;
        } else if is_image_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Scan `root`'s class folders. With `classes` given (a validation or test folder scanned
/// against the training folder's classes), every class folder found must be one of them and
/// labels follow that list; a class may be missing there.
pub fn scan(root: &Path, classes: Option<&[String]>) -> Result<ImageFolder> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            None,
            "is not a folder: expected a folder with one sub-folder of images per class",
        ));
    }
    let dirs: Vec<PathBuf> = read_dir_sorted(root)?.into_iter().filter(|p| p.is_dir()).collect();
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut by_lower: HashMap<String, String> = HashMap::new();
    for d in &dirs {
        if let Some(other) = by_lower.insert(name(d).to_lowercase(), name(d)) {
            return Err(Error::data(
                root,
                None,
                format!(
                    "has two class folders whose names differ only in case, `{other}` and `{}`: \
                     rename or merge them (they would be one folder on a case-insensitive file system)",
                    name(d)
                ),
            ));
        }
    }
    let names: Vec<String> = match classes {
        Some(known) => {
            if let Some(d) = dirs.iter().find(|d| !known.contains(&name(d))) {
                return Err(Error::data(
                    d,
                    None,
                    format!(
                        "is a class folder the training folder does not have (its classes: {})",
                        known.join(", ")
                    ),
                ));
            }
            known.to_vec()
        }
        None => dirs.iter().map(|d| name(d)).collect(),
    };
    if classes.is_none() && names.len() < 2 {
        return Err(Error::data(
            root,
            None,
            format!(
                "has {} class folder(s){}: a classifier needs at least two, one sub-folder of images per class",
                names.len(),
                names.first().map(|n| format!(" (`{n}`)")).unwrap_or_default()
            ),
        ));
    }
    if names.len() > MAX_CLASSES {
        return Err(Error::data(
            root,
            None,
            format!("has {} class folders; at most {MAX_CLASSES} are supported", names.len()),
        ));
    }
    let mut files = Vec::new();
    for d in &dirs {
        let label = names.iter().position(|n| *n == name(d)).expect("checked above") as u8;
        let mut found = Vec::new();
        image_files(d, &mut found)?;
        if found.is_empty() {
            return Err(Error::data(
                d,
                None,
                format!(
                    "is an empty class folder: it holds no {} file",
                    IMAGE_EXTENSIONS.join("/")
                ),
            ));
        }
        files.extend(found.into_iter().map(|f| (f, label)));
    }
    Ok(ImageFolder {
        root: root.to_path_buf(),
        classes: names,
        files,
    })
}

/// A loaded folder: the images that could be read, and those that could not.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The readable images, in [`ImageFolder::files`] order.
    pub dataset: Dataset,
    /// The file of each image in `dataset`.
    pub files: Vec<PathBuf>,
    /// Each file that could not be read, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Decode and resize every file of `folder` to `shape`, in parallel. Unreadable files are
/// skipped (listed in [`Loaded::skipped`]) or, with `strict`, the first one is the error; a
/// class left with no readable image is an error either way.
pub fn load(folder: &ImageFolder, shape: PhotoShape, strict: bool) -> Result<Loaded> {
    let decoded: Vec<Result<Vec<u8>>> = folder
        .files
        .par_iter()
        .map(|(path, _)| decode::load_photo(path, shape))
        .collect();
    let image_len = shape.channels * shape.size * shape.size;
    let mut images = Vec::with_capacity(folder.files.len() * image_len);
    let (mut labels, mut files, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for ((path, label), r) in folder.files.iter().zip(decoded) {
        match r {
            Ok(px) => {
                images.extend_from_slice(&px);
                labels.push(*label);
                files.push(path.clone());
            }
            Err(e) if strict => {
                return Err(Error::data(
                    path,
                    None,
                    format!("cannot be used ({e}); without --strict it would be skipped"),
                ))
            }
            Err(e) => skipped.push((path.clone(), error_reason(&e, path))),
        }
    }
    let k = folder.classes.len();
    let mut counts = vec![0usize; k];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    let present: Vec<u8> = folder.files.iter().map(|(_, l)| *l).collect();
    if let Some(c) = (0..k).find(|&c| counts[c] == 0 && present.contains(&(c as u8))) {
        return Err(Error::data(
            folder.root.join(&folder.classes[c]),
            None,
            "has no readable image: every file in this class folder was skipped",
        ));
    }
    let dataset = Dataset::new(images, Some(labels), [shape.channels, shape.size, shape.size], k)?;
    Ok(Loaded {
        dataset,
        files,
        skipped,
    })
}

/// The reason in an error about `path`, without repeating the path.
fn error_reason(e: &Error, path: &Path) -> String {
    let text = e.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix).unwrap_or(&text).to_string()
}

/// A file's name relative to `root` with `/` separators (for the run folder's file lists).
pub fn relative_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
