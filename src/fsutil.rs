//! Writing files without losing the user's: atomic replacement, refusing to write over an input,
//! and clearing the temporary files an interrupted write left behind.
//!
//! # Atomic replacement
//! [`replace_atomically`] writes `<name>.tmp-<pid>-<n>` in the target's directory, fsyncs it and
//! `rename`s it over the target: within one file system a rename replaces the target atomically,
//! so the target is always either the old file or the complete new one, never half of each. The
//! directory is fsynced afterwards so that the rename itself survives a power loss. A process
//! killed between the write and the rename leaves only the temporary file, which
//! [`remove_stale_temp_files`] clears on the next start.
//!
//! # Inputs are never outputs
//! [`refuse_overwriting_inputs`] compares files by identity ([`same_file`]: device and inode on
//! Unix), so `t.csv`, `./t.csv`, `/abs/t.csv`, a symlink to it and a hard link to it are all
//! recognised as the same file.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The marker between a target's file name and the writer's process id in a temporary file name.
const TEMP_MARKER: &str = ".tmp-";

/// The last component of `path`, to name a file or a run in a title (the whole path if it has
/// none, as `/` or `..`).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or(path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// A fresh temporary name next to `path`: `<file name>.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let Some(file_name) = path.file_name() else {
        return Err(Error::config(format!(
            "{}: the path does not name a file",
            path.display()
        )));
    };
    let mut tmp = file_name.to_os_string();
    tmp.push(format!(
        "{TEMP_MARKER}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

/// Replace `path` atomically (see the module documentation): `write` creates the temporary file
/// it is given; it is then fsynced and renamed over `path`. On any failure the temporary file is
/// removed and `path` is left as it was. I/O errors name `path` and the temporary file.
pub fn replace_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let io_err = |e: io::Error, doing: &str| {
        Error::io(
            path,
            io::Error::new(e.kind(), format!("{doing} {}: {e}", tmp.display())),
        )
    };
    let written = write(&tmp)
        .and_then(|()| {
            // Make the bytes durable before the rename makes them visible under the real name.
            OpenOptions::new()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(e, "syncing temporary file"))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err(e, "renaming temporary file")));
    if let Err(e) = written {
        // Best effort: the write failed, so the temporary file (if any) is garbage.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    #[cfg(unix)]
    {
        // Best effort: persist the directory entry; the file itself is already complete.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_atomically(path, |tmp| {
        fs::write(tmp, bytes).map_err(|e| {
            Error::io(
                path,
                io::Error::new(e.kind(), format!("writing temporary file {}: {e}", tmp.display())),
            )
        })
    })
}

/// Whether `a` and `b` name the same existing file (false when either does not exist).
///
/// On Unix: the same device and inode, from `stat` (which follows symlinks and sees hard links).
/// Not the `same-file` crate: it opens both files, and opening a FIFO or a process substitution
/// (`--train <(zcat train.csv.gz)`) blocks or consumes it. Elsewhere: the same canonical path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Refuse (before anything is written) when one of `outputs` is the same file as one of
/// `inputs`, by any spelling. Each output is `(what, path)`, `what` naming it for the user
/// (`--out`, `log.csv`, ...); the error names the output, the input and both paths.
pub fn refuse_overwriting_inputs(outputs: &[(&str, &Path)], inputs: &[&Path]) -> Result<()> {
    for (what, out) in outputs {
        if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
            return Err(Error::config(format!(
                "refusing to write {what} {}: it is the same file as the input {}, which would be \
                 overwritten; write it somewhere else",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Remove the temporary files (`NAME.tmp-<pid>...`) that interrupted atomic writes left in `dir`:
/// all of them, or only those of the file named `only_for`. A file whose writer (by pid) is
/// still running is kept. Returns the files removed. Best effort: errors are ignored.
pub fn remove_stale_temp_files(dir: &Path, only_for: Option<&OsStr>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((target, rest)) = name.rsplit_once(TEMP_MARKER) else {
            continue;
        };
        if only_for.is_some_and(|t| t.to_string_lossy() != target) {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let stale = match pid {
            None => false, // not a name this module makes: not ours to remove
            Some(pid) => pid != std::process::id() && !process_is_running(pid),
        };
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}

/// Whether process `pid` exists (Linux: `/proc/<pid>`; elsewhere unknown, taken as not running).
fn process_is_running(pid: u32) -> bool {
    Path::new("/proc/self").exists() && Path::new(&format!("/proc/{pid}")).exists()
}

/// A fresh, empty directory under the system temp dir, removed on drop (the unit tests').
#[cfg(test)]
pub(crate) struct TempDir(pub PathBuf);

#[cfg(test)]
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vitcore-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The names in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_recognised_by_any_spelling() {
        let tmp = TempDir::new("same");
        let dir = &tmp.0;
        let input = dir.join("t.csv");
        fs::write(&input, "x").unwrap();
        let dotted = dir.join(".").join("t.csv");
        let roundabout = dir.join("sub").join("..").join("t.csv");
        fs::create_dir_all(dir.join("sub")).unwrap();
        let hard = dir.join("hard.csv");
        fs::hard_link(&input, &hard).unwrap();
        let mut spellings = vec![input.clone(), dotted, roundabout, hard];
        #[cfg(unix)]
        {
            let link = dir.join("link.csv");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            spellings.push(link);
        }
        for out in &spellings {
            let e = refuse_overwriting_inputs(&[("--out", out)], &[&input]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("--out") && msg.contains("t.csv") && msg.contains("same file"),
                "{msg}"
            );
        }
        let other = dir.join("other.csv");
        refuse_overwriting_inputs(&[("--out", &other)], &[&input]).unwrap();
        fs::write(&other, "y").unwrap();
        refuse_overwriting_inputs(&[("--out", &other)], &[&input]).unwrap();
        assert_eq!(fs::read_to_string(&input).unwrap(), "x");
    }

    #[test]
    fn stale_temp_files_are_removed_and_live_ones_kept() {
        let tmp = TempDir::new("stale");
        let dir = &tmp.0;
        // pid 4294967295 cannot be running (Linux pids stay below 2^22).
        let dead = ["last.safetensors.tmp-4294967295-0", "log.csv.tmp-4294967295-3"];
        let live = format!("best.safetensors.tmp-{}-0", std::process::id());
        for name in dead.iter().copied().chain([live.as_str(), "notes.tmp-x", "log.csv"]) {
            fs::write(dir.join(name), "x").unwrap();
        }
        let only = remove_stale_temp_files(dir, Some(OsStr::new("log.csv")));
        assert_eq!(only, [dir.join(dead[1])]);
        let removed = remove_stale_temp_files(dir, None);
        assert_eq!(removed, [dir.join(dead[0])]);
        for kept in [live.as_str(), "notes.tmp-x", "log.csv"] {
            assert!(dir.join(kept).exists(), "{kept} must be kept");
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let tmp = TempDir::new("atomic");
        let dir = &tmp.0;
        let p = dir.join("a.json");
        fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(tmp.files(), ["a.json"]);
        // A failed write leaves the old file and no temporary.
        let e = replace_atomically(&p, |_| Err(Error::config("boom"))).unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(tmp.files(), ["a.json"]);
    }
}
