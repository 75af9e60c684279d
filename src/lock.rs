//! One run per output folder, or per shard of it, at a time. A run takes an advisory lock
//! (`flock`) on `.videolisa-lock` in its output folder: exclusively when it runs all of the
//! work, shared when it runs one shard (which also takes its shard's own lock file exclusively),
//! so shards of one split run side by side while a second run of the same work is refused,
//! naming the run that holds the folder. The kernel drops the locks when a process ends, even
//! by `kill -9`; the files stay and mean nothing by themselves.

use crate::error::{Error, Result};
use crate::shard::Shard;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file of a whole folder; shards add `-<i>-of-<n>`.
pub const LOCK_FILE: &str = ".videolisa-lock";

/// Whether a file in an output folder is one of these lock files.
pub fn is_lock_file(name: &str) -> bool {
    name.starts_with(LOCK_FILE)
}

/// A held folder (or shard) lock; dropping it releases the folder (a whole-folder lock also
/// removes its file: nobody else can hold it then).
#[derive(Debug)]
pub struct FolderLock {
    files: Vec<File>,
    remove: Option<PathBuf>,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // unlink while still holding the lock: a run that opened the old file meanwhile finds
        // it no longer at the path (see `take`) and opens the new one
        if let Some(p) = self.remove.take() {
            let _ = std::fs::remove_file(p);
        }
        self.files.clear();
    }
}

/// A short exclusive hold on a folder's run manifest, waited for: runs (shards) starting
/// together on one folder read, compare and write its manifest one after another, so none sees
/// another's half-made state. The file goes when the hold ends.
#[derive(Debug)]
pub struct ManifestGuard {
    file: Option<File>,
    path: PathBuf,
}

impl ManifestGuard {
    /// Waits until no other run is preparing `dir`'s manifest, then holds it.
    pub fn wait(dir: &Path) -> Result<Self> {
        let path = dir.join(format!("{LOCK_FILE}-manifest"));
        loop {
            let f = open(&path)?;
            f.lock().map_err(|e| Error::io(&path, e))?;
            if is_at(&f, &path)? {
                return Ok(ManifestGuard { file: Some(f), path });
            }
        }
    }
}

impl Drop for ManifestGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.file = None;
    }
}

/// Opens (creating) a lock file.
fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::input(path, e))
}

/// Whether the locked file `f` is still the one at `path`: its holder may have removed it (and
/// another run made a new one) while this run waited.
fn is_at(f: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(path).ok();
    let locked = f.metadata().map_err(|e| Error::io(path, e))?;
    Ok(here.is_some_and(|m| (m.dev(), m.ino()) == (locked.dev(), locked.ino())))
}

/// How a lock file is taken.
#[derive(Clone, Copy)]
enum Mode {
    Exclusive,
    Shared,
}

impl FolderLock {
    /// Takes `dir` (which must exist) for a run of `command` on `shard`; another run holding
    /// what this one needs is a usage error naming it.
    pub fn acquire(dir: &Path, command: &str, shard: Shard) -> Result<Self> {
        let holder = format!(
            "pid {} on {}: videolisa {command}{} (started at Unix time {})",
            std::process::id(),
            hostname(),
            if shard.is_whole() {
                String::new()
            } else {
                format!(" --shard {shard}")
            },
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        let main = dir.join(LOCK_FILE);
        if shard.is_whole() {
            let f = take(dir, &main, Mode::Exclusive)?;
            write_holder(&f, &main, &holder)?;
            return Ok(FolderLock {
                files: vec![f],
                remove: Some(main),
            });
        }
        let f = take(dir, &main, Mode::Shared)?;
        let own = dir.join(format!("{LOCK_FILE}-{}-of-{}", shard.index, shard.count));
        let g = take(dir, &own, Mode::Exclusive)?;
        write_holder(&g, &own, &holder)?;
        Ok(FolderLock {
            files: vec![f, g],
            remove: None,
        })
    }
}

/// Opens `path` and locks it without waiting. A file its holder removed while this run opened
/// it is locked in vain: the lock must be on the file that is at `path` now, so that run
/// tries again.
fn take(dir: &Path, path: &Path, mode: Mode) -> Result<File> {
    for _ in 0..16 {
        let f = open(path)?;
        let taken = match mode {
            Mode::Exclusive => f.try_lock(),
            Mode::Shared => f.try_lock_shared(),
        };
        match taken {
            Ok(()) if is_at(&f, path)? => return Ok(f),
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(busy(dir)),
            Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
    Err(busy(dir))
}

fn write_holder(f: &File, path: &Path, holder: &str) -> Result<()> {
    let mut w = f;
    w.set_len(0)
        .and_then(|()| w.rewind())
        .and_then(|()| w.write_all(format!("{holder}\n").as_bytes()))
        .map_err(|e| Error::io(path, e))
}

/// The refusal: which runs hold `dir` (the shard lock files still held, else the whole-folder
/// lock file's holder).
fn busy(dir: &Path) -> Error {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| is_lock_file(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let live_shards: Vec<String> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != LOCK_FILE))
        .filter(|p| File::open(p).is_ok_and(|f| matches!(f.try_lock(), Err(TryLockError::WouldBlock))))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let holders = if live_shards.is_empty() {
        std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap_or_default()
    } else {
        live_shards.concat()
    };
    let holders: Vec<&str> = holders.lines().filter(|l| !l.trim().is_empty()).collect();
    Error::Usage(format!(
        "{}: another videolisa run is using this folder ({}); wait for it to end, or give each \
         process its own --shard i/n",
        dir.display(),
        if holders.is_empty() {
            "holder unknown".to_string()
        } else {
            holders.join("; ")
        }
    ))
}

/// This machine's name (for the holder line).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_runs_exclude_everything_and_shards_only_their_own_shard() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let half = |i| Shard { index: i, count: 2 };
        let whole = FolderLock::acquire(d, "batch", Shard::WHOLE).unwrap();
        let e = FolderLock::acquire(d, "batch", half(0)).unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("videolisa batch"),
            "{e}"
        );
        assert!(FolderLock::acquire(d, "batch", Shard::WHOLE).is_err());
        drop(whole);
        let a = FolderLock::acquire(d, "eval", half(0)).unwrap();
        let b = FolderLock::acquire(d, "eval", half(1)).unwrap();
        let e = FolderLock::acquire(d, "eval", half(1)).unwrap_err().to_string();
        assert!(e.contains("--shard 1/2"), "{e}");
        let e = FolderLock::acquire(d, "eval", Shard::WHOLE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--shard 0/2") && e.contains("--shard 1/2"), "{e}");
        drop((a, b));
        let whole = FolderLock::acquire(d, "eval", Shard::WHOLE).unwrap();
        assert!(d.join(LOCK_FILE).exists());
        drop(whole);
        assert!(
            !d.join(LOCK_FILE).exists(),
            "a whole-folder lock leaves no file behind"
        );
        FolderLock::acquire(d, "eval", Shard::WHOLE).unwrap();
        assert!(is_lock_file(".videolisa-lock-0-of-2") && !is_lock_file("results.jsonl"));
        drop(ManifestGuard::wait(d).unwrap());
        assert!(!d.join(".videolisa-lock-manifest").exists());
    }
}
