//! Run manifests: a small JSON file in every output folder saying what its results were computed
//! with (tool version, model and CLIP identity, dtypes, device kind, sampling, template, ...).
//! A resumed run must match it or is refused with the differences named; a folder holding an
//! earlier run is replaced without leaving stale files; a run that did not finish is marked so.

use crate::error::{Error, Result};
use crate::lock::ManifestGuard;
use crate::model::videolisa::{LoadOptions, ModelPaths};
use crate::output::write_atomic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// File name of the manifest inside an output folder.
pub const MANIFEST_FILE: &str = "videolisa-run.json";

/// Whether the run that wrote a folder got to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not (yet) finished: the folder may hold a partial result.
    Running,
    /// Every output was written.
    Complete,
}

/// What an output folder was computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Always `videolisa`.
    pub tool: String,
    /// The tool version that wrote it.
    pub version: String,
    /// The subcommand (`segment`, `eval`).
    pub command: String,
    /// Everything that decides the results; a resumed run must match all of it.
    pub settings: BTreeMap<String, String>,
    /// For people: where the model came from, the input, ... (not compared).
    pub info: BTreeMap<String, String>,
    /// Top-level names under the folder that this run writes (what replacing it removes).
    pub entries: Vec<String>,
    /// Running or complete.
    pub status: RunStatus,
    /// Unix time the run started.
    pub started: u64,
    /// Unix time it finished.
    pub finished: Option<u64>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RunManifest {
    /// A manifest for a run of `command` that is starting now.
    pub fn new(command: &str, settings: BTreeMap<String, String>, info: BTreeMap<String, String>) -> Self {
        RunManifest {
            tool: "videolisa".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            settings,
            info,
            entries: Vec::new(),
            status: RunStatus::Running,
            started: now(),
            finished: None,
        }
    }

    /// Reads `<dir>/videolisa-run.json`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<RunManifest>> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Usage(format!(
                "{}: not a readable run manifest ({e}); remove it or choose another output folder",
                path.display()
            ))
        })
    }

    /// Writes the manifest into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::json::write_json(&dir.join(MANIFEST_FILE), self)
    }

    /// Marks the run complete and rewrites the manifest.
    pub fn finish(&mut self, dir: &Path) -> Result<()> {
        self.status = RunStatus::Complete;
        self.finished = Some(now());
        self.write(dir)
    }

    /// A short hash of the settings, which every done marker of the run carries.
    pub fn settings_fingerprint(&self) -> String {
        item_fingerprint(&serde_json::json!(self.settings))
    }

    /// What differs between this run and `previous` (empty when it may resume it), one line each.
    pub fn differences(&self, previous: &RunManifest) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, now: Option<&String>, then: Option<&String>| {
            if now != then {
                let show = |v: Option<&String>| v.map_or("(not set)".to_string(), |s| format!("`{s}`"));
                out.push(format!("{name}: {} now, {} in the folder", show(now), show(then)));
            }
        };
        field("command", Some(&self.command), Some(&previous.command));
        field("videolisa version", Some(&self.version), Some(&previous.version));
        let keys: std::collections::BTreeSet<&String> =
            self.settings.keys().chain(previous.settings.keys()).collect();
        for k in keys {
            field(k, self.settings.get(k), previous.settings.get(k));
        }
        out
    }
}

/// A short, stable identity of a checkpoint folder: SHA-256 over its file names and sizes, the
/// whole of every small file (configs, tokenizer) and the first and last 64 KiB of every large
/// one (weights), so that a changed checkpoint is noticed without reading gigabytes.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    fingerprint_files(names)
}

/// [`fingerprint`] of the given files (in this order), e.g. one weight file.
pub fn fingerprint_files(names: Vec<PathBuf>) -> Result<String> {
    const SMALL: u64 = 4 << 20;
    const EDGE: u64 = 64 << 10;
    let mut h = Sha256::new();
    for p in names {
        let len = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(len.to_le_bytes());
        let mut f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
        let mut take = |from: u64, n: u64| -> Result<()> {
            let mut buf = vec![0u8; n as usize];
            f.seek(SeekFrom::Start(from)).map_err(|e| Error::io(&p, e))?;
            f.read_exact(&mut buf).map_err(|e| Error::io(&p, e))?;
            h.update(&buf);
            Ok(())
        };
        if len <= SMALL {
            take(0, len)?;
        } else {
            take(0, EDGE)?;
            take(len - EDGE, EDGE)?;
        }
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Records a post-optimization run's XMem weights: their fingerprint decides the outputs (a
/// folder made with other weights, or without `--propagate`, is not resumed), the path is info.
pub fn add_propagation(
    settings: &mut BTreeMap<String, String>,
    info: &mut BTreeMap<String, String>,
    xmem: &Path,
) -> Result<()> {
    settings.insert("propagate".into(), fingerprint_files(vec![xmem.to_path_buf()])?);
    info.insert("xmem_path".into(), xmem.display().to_string());
    Ok(())
}

/// The settings of a model run that decide its outputs (checkpoint and CLIP identity, dtypes,
/// device kind, sampling), and where the weights came from. Needs no loaded model.
pub fn model_settings(
    paths: &ModelPaths,
    o: &LoadOptions,
    n_sparse: usize,
    n_dense: usize,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let name = |d: candle_core::DType| format!("{d:?}").to_lowercase();
    let settings = BTreeMap::from([
        ("model".to_string(), fingerprint(&paths.model)?),
        ("clip".to_string(), fingerprint(&paths.clip)?),
        (
            "dtypes".to_string(),
            format!("llm={},clip={},sam={}", name(o.llm), name(o.clip), name(o.sam)),
        ),
        (
            "device".to_string(),
            crate::device::kind_name(&o.device).to_string(),
        ),
        (
            "sampling".to_string(),
            format!("sparse={n_sparse},dense={n_dense}"),
        ),
    ]);
    let info = BTreeMap::from([
        ("model_path".to_string(), paths.model.display().to_string()),
        ("clip_path".to_string(), paths.clip.display().to_string()),
    ]);
    Ok((settings, info))
}

/// Creates `dir` if needed and proves it writable (a file is created and removed), so that an
/// unwritable output is found before any expensive work.
pub fn ensure_writable(dir: &Path) -> Result<()> {
    // the output folder is the user's choice: any reason it cannot be one is bad input
    let unusable = |e: std::io::Error| match Error::input(dir, e) {
        Error::NotFound { .. } => {
            Error::Usage(format!("{}: this folder cannot be created here", dir.display()))
        }
        e => e,
    };
    std::fs::create_dir_all(dir).map_err(unusable)?;
    let probe = dir.join(format!(".videolisa-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(unusable)?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}

/// [`ensure_writable`] for a folder that is written later (a dump): proves it can be made and
/// written now, then removes again the folders it had to create, so nothing is left if the run
/// stops before writing there.
pub fn check_writable(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    let checked = ensure_writable(dir);
    for d in missing {
        let _ = std::fs::remove_dir(d);
    }
    checked
}

/// Name of the marker that says an item's outputs (one eval expression, one batch job) are all
/// on disk. It holds the item's fingerprint, so a changed item is never taken as done, and its
/// result record, so a finished item can be reported without recomputing it.
pub const DONE: &str = ".done";

/// What an item's output folder holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    /// Not finished (or never started).
    Missing,
    /// Finished for exactly this item; its result record.
    Done(serde_json::Value),
    /// Finished for an item with other inputs (another video, prompt, template, ...).
    Stale,
}

/// A short hash of an item's defining inputs (as JSON), stored in its done marker.
pub fn item_fingerprint(inputs: &serde_json::Value) -> String {
    let h = Sha256::digest(inputs.to_string().as_bytes());
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A path as text for fingerprints and messages: itself when UTF-8, else its bytes in hex.
pub fn path_key(p: &Path) -> String {
    match p.to_str() {
        Some(s) => s.to_string(),
        None => {
            let hex: String = p
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("hex:{hex}")
        }
    }
}

/// What an input is now, for done markers: size and modification time of a file, of every file
/// in a folder (frames overwritten in place change it), or of every file in a list.
pub fn input_fingerprint(paths: &[&Path]) -> serde_json::Value {
    let stamp = |p: &Path| -> serde_json::Value {
        let m = std::fs::metadata(p).ok();
        let modified = m
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().to_string());
        serde_json::json!([path_key(p), m.map(|m| m.len()), modified])
    };
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            out.extend(files.iter().map(|f| stamp(f)));
        } else {
            out.push(stamp(p));
        }
    }
    serde_json::Value::Array(out)
}

/// A short hash of the settings in `dir`'s run manifest (empty without one): done markers carry
/// it, so a result made with other settings is never taken as done, even when another shard
/// replaced the manifest meanwhile.
pub fn settings_fingerprint(dir: &Path) -> Result<String> {
    Ok(RunManifest::read(dir)?
        .map(|m| m.settings_fingerprint())
        .unwrap_or_default())
}

/// The entry of `dir` (one of `entries`) that `input` lies inside, if any: replacing that entry
/// would delete the run's own input.
pub fn entry_holding<'a>(
    input: &Path,
    dir: &Path,
    entries: impl IntoIterator<Item = &'a str>,
) -> Option<PathBuf> {
    let (input, dir) = (input.canonicalize().ok()?, dir.canonicalize().ok()?);
    // entries are names directly under `dir`: only the first component below it can match
    let first = input.strip_prefix(&dir).ok()?.components().next()?;
    entries
        .into_iter()
        .find(|e| Path::new(e) == Path::new(&first))
        .map(|e| dir.join(e))
}

/// Name of the marker an item's folder gets before anything else is written into it, so that a
/// folder left by an interrupted run is known as ours (and replaced), while a folder someone
/// else made under that name is not.
pub const STARTED: &str = ".started";

/// Marks `dir` (created if needed) as an item folder this tool is writing.
pub fn mark_started(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(STARTED);
    std::fs::write(&path, b"").map_err(|e| Error::io(&path, e))
}

/// Whether `dir` may be replaced as an item folder: absent, empty, or made by this tool
/// (started or done).
pub fn is_item_folder(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(_) => !dir.exists(),
        Ok(mut rd) => rd.next().is_none() || dir.join(DONE).exists() || dir.join(STARTED).exists(),
    }
}

/// Whether the item with `fingerprint` is finished in `dir`.
pub fn item_state(dir: &Path, fingerprint: &str) -> ItemState {
    let Ok(text) = std::fs::read_to_string(dir.join(DONE)) else {
        return ItemState::Missing;
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v["fingerprint"] == fingerprint => ItemState::Done(v["record"].clone()),
        _ => ItemState::Stale,
    }
}

/// Marks `dir` finished for the item with `fingerprint` (written last, atomically; the started
/// marker goes once it is there).
pub fn mark_done(dir: &Path, fingerprint: &str, record: &serde_json::Value) -> Result<()> {
    let path = dir.join(DONE);
    let body = serde_json::json!({"fingerprint": fingerprint, "record": record}).to_string();
    write_atomic(&path, |w| {
        std::io::Write::write_all(w, body.as_bytes()).map_err(|e| Error::io(&path, e))
    })?;
    let started = dir.join(STARTED);
    match std::fs::remove_file(&started) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&started, e)),
        _ => Ok(()),
    }
}

/// Removes an item's folder (partial or stale outputs) so that it is computed from scratch.
pub fn clear_item(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Names directly under `dir`, sorted (the folder's lock files left out: they are no result).
fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !crate::lock::is_lock_file(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Removes `names` (files or folders) from `dir` when present.
fn remove_entries(dir: &Path, names: &[String]) -> Result<()> {
    for n in names {
        if n.is_empty() || n.contains('/') || n.contains('\\') || n == ".." || n == "." {
            continue;
        }
        let p = dir.join(n);
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(_) => continue,
        };
        r.map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    let mut s = shown.join(", ");
    if more > 0 {
        s += &format!(" and {more} more");
    }
    s
}

/// What [`prepare_replace`] found in the folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Replaced {
    /// The folder was new or empty.
    Nothing,
    /// An earlier run (its manifest) was removed.
    EarlierRun(Box<RunManifest>),
    /// `--force`: the run's own entries were removed from a folder that held other files.
    Forced,
}

/// Prepares `dir` for a run that owns its outputs (`segment`): a folder holding an earlier
/// videolisa run of the same command has that run's files removed; a non-empty folder holding
/// anything else is refused unless `force` (then only this run's own entries are replaced).
/// Writes `manifest` (status running) on success.
pub fn prepare_replace(dir: &Path, manifest: &mut RunManifest, force: bool) -> Result<Replaced> {
    ensure_writable(dir)?;
    let previous = RunManifest::read(dir)?;
    let replaced = match previous {
        Some(prev) if prev.command == manifest.command => {
            remove_entries(dir, &prev.entries)?;
            remove_entries(dir, &manifest.entries)?;
            Replaced::EarlierRun(Box::new(prev))
        }
        prev => {
            let present: Vec<String> = list(dir)?.into_iter().filter(|n| n != MANIFEST_FILE).collect();
            if present.is_empty() && prev.is_none() {
                Replaced::Nothing
            } else if force {
                remove_entries(dir, &manifest.entries)?;
                Replaced::Forced
            } else {
                let holds = match prev {
                    Some(p) => format!("a videolisa `{}` run", p.command),
                    None => format!("other files ({})", preview(&present)),
                };
                return Err(Error::Usage(format!(
                    "{}: the output folder holds {holds}; choose a new or empty folder, or pass --force to \
                     write into it ({} are replaced, other files are left alone)",
                    dir.display(),
                    preview(&manifest.entries)
                )));
            }
        }
    };
    manifest.write(dir)?;
    Ok(replaced)
}

/// What [`prepare_resume`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// No earlier results: everything runs.
    Fresh,
    /// Results of the same settings are there: finished items are kept.
    Continue(Box<RunManifest>),
    /// `--fresh`: earlier results were removed.
    Discarded,
}

/// Prepares `dir` for a resumable run (`eval`): the same settings continue where the folder
/// stopped; other settings, or results without a manifest, are refused (naming the
/// differences) unless `fresh`, which removes `owned` (the names such a run writes) first.
pub fn prepare_resume(dir: &Path, manifest: &RunManifest, fresh: bool, owned: &[String]) -> Result<Resume> {
    ensure_writable(dir)?;
    // shards starting together: one at a time reads, compares and writes the manifest
    let _guard = ManifestGuard::wait(dir)?;
    let previous = RunManifest::read(dir)?;
    let start = |removed: Resume| -> Result<Resume> {
        manifest.write(dir)?;
        Ok(removed)
    };
    match previous {
        Some(prev) if manifest.differences(&prev).is_empty() => Ok(Resume::Continue(Box::new(prev))),
        _ if fresh => {
            remove_entries(dir, owned)?;
            remove_entries(dir, &[MANIFEST_FILE.to_string()])?;
            start(Resume::Discarded)
        }
        Some(prev) => Err(Error::Usage(format!(
            "{}: the results there were made with other settings:\n  {}\nrerun with the same options to \
             resume them, use another --out, or pass --fresh to discard them",
            dir.display(),
            manifest.differences(&prev).join("\n  ")
        ))),
        None => {
            let present: Vec<String> = list(dir)?;
            if present.is_empty() {
                start(Resume::Fresh)
            } else {
                Err(Error::Usage(format!(
                    "{}: the folder holds files but no run manifest ({}), so how they were made is \
                     unknown; use another --out, or pass --fresh to discard this run's outputs there",
                    dir.display(),
                    preview(&present)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(model: &str) -> RunManifest {
        let mut m = RunManifest::new(
            "segment",
            BTreeMap::from([("model".to_string(), model.to_string())]),
            BTreeMap::new(),
        );
        m.entries = vec!["prompt_0".into(), "summary.json".into()];
        m
    }

    #[test]
    fn replacing_an_earlier_run_leaves_nothing_stale() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut first = manifest("a");
        first.entries.push("prompt_1".into());
        assert_eq!(prepare_replace(d, &mut first, false).unwrap(), Replaced::Nothing);
        std::fs::create_dir_all(d.join("prompt_1")).unwrap();
        std::fs::write(d.join("prompt_1/00000.png"), b"old").unwrap();
        std::fs::write(d.join("notes.txt"), b"mine").unwrap();
        let mut second = manifest("b");
        assert!(matches!(
            prepare_replace(d, &mut second, false).unwrap(),
            Replaced::EarlierRun(_)
        ));
        assert!(!d.join("prompt_1").exists() && d.join("notes.txt").exists());
        assert_eq!(RunManifest::read(d).unwrap().unwrap().status, RunStatus::Running);
    }

    #[test]
    fn foreign_folders_are_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.pdf"), b"x").unwrap();
        let e = prepare_replace(dir.path(), &mut manifest("a"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("thesis.pdf") && e.contains("--force"), "{e}");
        assert_eq!(
            prepare_replace(dir.path(), &mut manifest("a"), true).unwrap(),
            Replaced::Forced
        );
        assert!(dir.path().join("thesis.pdf").exists());
    }

    #[test]
    fn resume_needs_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut a = manifest("a");
        a.command = "eval".into();
        assert_eq!(prepare_resume(d, &a, false, &[]).unwrap(), Resume::Fresh);
        std::fs::create_dir_all(d.join("video1/0")).unwrap();
        assert!(matches!(
            prepare_resume(d, &a, false, &[]).unwrap(),
            Resume::Continue(_)
        ));
        let mut b = a.clone();
        b.settings.insert("model".into(), "b".into());
        let e = prepare_resume(d, &b, false, &[]).unwrap_err().to_string();
        assert!(
            e.contains("model: `b` now, `a` in the folder") && e.contains("--fresh"),
            "{e}"
        );
        assert_eq!(
            prepare_resume(d, &b, true, &["video1".into()]).unwrap(),
            Resume::Discarded
        );
        assert!(!d.join("video1").exists());
        assert_eq!(RunManifest::read(d).unwrap().unwrap().settings["model"], "b");
    }

    #[test]
    fn done_markers_know_their_item() {
        let dir = tempfile::tempdir().unwrap();
        let a = item_fingerprint(&serde_json::json!({"prompt": "the dog"}));
        let b = item_fingerprint(&serde_json::json!({"prompt": "the cat"}));
        assert_eq!(item_state(dir.path(), &a), ItemState::Missing);
        mark_done(dir.path(), &a, &serde_json::json!({"frames": 3})).unwrap();
        assert_eq!(
            item_state(dir.path(), &a),
            ItemState::Done(serde_json::json!({"frames": 3}))
        );
        assert_eq!(item_state(dir.path(), &b), ItemState::Stale);
        clear_item(dir.path()).unwrap();
        assert_eq!(item_state(dir.path(), &a), ItemState::Missing);
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{\"a\": 1}").unwrap();
        let a = fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("config.json"), b"{\"a\": 2}").unwrap();
        assert_ne!(a, fingerprint(dir.path()).unwrap());
    }
}
