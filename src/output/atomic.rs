//! Atomic file writes: data goes to a temporary file beside the target, which is renamed
//! over the target only once complete, so an interrupted run never leaves a half-written file.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Owns a temporary file name: deletes the file on drop unless [`TempGuard::commit`] ran.
pub struct TempGuard {
    target: PathBuf,
    tmp: PathBuf,
    armed: bool,
}

impl TempGuard {
    /// Flushes and syncs `writer` (the temporary file), then renames it onto the target.
    pub fn commit(mut self, writer: BufWriter<File>) -> Result<()> {
        let f = writer
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A file being written under a temporary name; [`AtomicFile::commit`] moves it into place,
/// dropping it without committing deletes it.
pub struct AtomicFile {
    guard: TempGuard,
    writer: BufWriter<File>,
}

impl AtomicFile {
    /// Creates the temporary file (and the target's parent folders).
    pub fn create(target: &Path) -> Result<Self> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let name = target
            .file_name()
            .ok_or_else(|| Error::Internal(format!("{}: not a file path", target.display())))?
            .to_string_lossy();
        let tmp = parent.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            guard: TempGuard {
                target: target.to_path_buf(),
                tmp,
                armed: true,
            },
            writer: BufWriter::new(f),
        })
    }

    /// The buffered writer of the temporary file.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.writer
    }

    /// Splits into the writer and the guard that commits or removes it.
    pub fn into_parts(self) -> (BufWriter<File>, TempGuard) {
        (self.writer, self.guard)
    }

    /// Flushes, syncs and renames the temporary file onto the target.
    pub fn commit(self) -> Result<()> {
        self.guard.commit(self.writer)
    }
}

/// Writes `target` atomically with `body`, which receives the temporary file's writer.
pub fn write_atomic(target: &Path, body: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let mut f = AtomicFile::create(target)?;
    body(f.writer())?;
    f.writer().flush().map_err(|e| Error::io(target, e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial").unwrap();
            Err(Error::Runtime("interrupted".into()))
        });
        assert!(r.is_err());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 0);
        write_atomic(&p, |w| w.write_all(b"ok").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
    }
}
