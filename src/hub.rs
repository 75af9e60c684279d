//! Finding checkpoints: a local directory, or a Hugging Face hub id resolved in the standard HF
//! cache (`HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`)
//! and downloaded there with hf-hub when missing (unless offline: `--offline` or
//! `HF_HUB_OFFLINE=1`).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The VideoLISA checkpoint used when none is given.
pub const DEFAULT_MODEL: &str = "ZechenBai/VideoLISA-3.8B";
/// The CLIP tower VideoLISA was trained with.
pub const DEFAULT_CLIP: &str = "openai/clip-vit-large-patch14-336";

/// The weight files an XMem++ folder or repository may hold, in order of preference.
pub const XMEM_FILES: [&str; 2] = ["XMem.pth", "model.safetensors"];
/// Where XMem's weights are published (the XMem v1.0 release; XMem2 downloads the same file).
pub const XMEM_URL: &str = "https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth";

/// Which kind of checkpoint a repository holds (decides which files are needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// VideoLISA: config, LLM+SAM weights, tokenizer.
    VideoLisa,
    /// CLIP: config, weights, preprocessor config.
    Clip,
    /// XMem++: `XMem.pth` or `model.safetensors`, nothing else.
    XMem,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode.
pub fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The HF hub cache directory.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return d;
    }
    if let Some(h) = var("HF_HOME") {
        return h.join("hub");
    }
    let home = var("HOME").unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// Why `spec` reads as a local path rather than a hub id, if it does: it starts like a path
/// (`/`, `./`, `../`, `~`), has more or fewer than two components, or its first component is a
/// folder here (so `models/videolis` is a mistyped `models/videolisa`, not a repository).
pub fn local_path_reason(spec: &str) -> Option<String> {
    if ["/", "./", "../", "~"].iter().any(|p| spec.starts_with(p)) || spec.starts_with('.') {
        return Some("it starts like a path".into());
    }
    if !is_hub_id(spec) {
        return Some("it is not of the form owner/name".into());
    }
    let owner = spec.split('/').next().unwrap_or_default();
    Path::new(owner)
        .is_dir()
        .then(|| format!("`{owner}/` is a folder here, so it was read as a path, not a hub id"))
}

/// Whether `spec` names a hub repository (`owner/name`) rather than a path.
pub fn is_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Files of `kind` a snapshot needs, given the files it lists (`have`). `Err` lists what is
/// missing.
pub fn needed_files(
    kind: RepoKind,
    have: &dyn Fn(&str) -> bool,
    read: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<String>, Vec<String>> {
    if kind == RepoKind::XMem {
        return match XMEM_FILES.into_iter().find(|f| have(f)) {
            Some(f) => Ok(vec![f.to_string()]),
            None => Err(vec!["XMem.pth (or model.safetensors)".into()]),
        };
    }
    let mut need = vec!["config.json".to_string()];
    let mut missing = Vec::new();
    if !have("config.json") {
        missing.push("config.json".to_string());
    }
    // weights: an index with its shards, or one file
    let mut weights_found = false;
    for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
        if have(index) {
            need.push(index.into());
            weights_found = true;
            match read(index).and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
                Some(v) => {
                    let mut shards: Vec<String> = v
                        .get("weight_map")
                        .and_then(Value::as_object)
                        .map(|m| m.values().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default();
                    shards.sort();
                    shards.dedup();
                    for s in shards {
                        if !have(&s) {
                            missing.push(s.clone());
                        }
                        need.push(s);
                    }
                }
                None => missing.push(format!("{index} (unreadable)")),
            }
            break;
        }
    }
    if !weights_found {
        match ["model.safetensors", "pytorch_model.bin"]
            .into_iter()
            .find(|f| have(f))
        {
            Some(f) => need.push(f.into()),
            None => missing.push("model.safetensors (or model.safetensors.index.json + shards)".into()),
        }
    }
    match kind {
        RepoKind::VideoLisa => {
            if have("tokenizer.json") {
                need.push("tokenizer.json".into());
            } else if have("tokenizer.model") {
                need.push("tokenizer.model".into());
            } else {
                missing.push("tokenizer.model (or tokenizer.json)".into());
            }
            for f in [
                "tokenizer_config.json",
                "special_tokens_map.json",
                "added_tokens.json",
            ] {
                if have(f) {
                    need.push(f.into());
                }
            }
        }
        RepoKind::Clip => {
            if have("preprocessor_config.json") {
                need.push("preprocessor_config.json".into());
            }
        }
        RepoKind::XMem => {}
    }
    if missing.is_empty() {
        Ok(need)
    } else {
        Err(missing)
    }
}

/// The snapshot directory of `id` in the cache (`refs/main` → `snapshots/<hash>`), if any.
pub fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let hash = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
    let snap = repo.join("snapshots").join(hash.trim());
    snap.is_dir().then_some(snap)
}

/// Resolves `spec` (a directory or a hub id) to a local directory holding every file `kind`
/// needs; downloads into the HF cache when online.
pub fn resolve(spec: &str, kind: RepoKind, offline: bool) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::Usage(format!(
            "{spec}: is a file; expected a checkpoint folder or a hub id (owner/name)"
        )));
    }
    if let Some(reason) = local_path_reason(spec) {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: format!("no such checkpoint folder ({reason})"),
        });
    }
    let cache = cache_dir();
    let snapshot = cached_snapshot(&cache, spec);
    if let Some(snap) = &snapshot {
        let have = |f: &str| snap.join(f).exists();
        let read = |f: &str| std::fs::read_to_string(snap.join(f)).ok();
        if needed_files(kind, &have, &read).is_ok() {
            return Ok(snap.clone());
        }
    }
    let offline = offline || env_offline();
    if offline {
        let place = snapshot.clone().unwrap_or_else(|| {
            cache
                .join(format!("models--{}", spec.replace('/', "--")))
                .join("snapshots")
                .join("<commit>")
        });
        let missing = match &snapshot {
            Some(snap) => {
                let have = |f: &str| snap.join(f).exists();
                let read = |f: &str| std::fs::read_to_string(snap.join(f)).ok();
                needed_files(kind, &have, &read).err().unwrap_or_default()
            }
            None => needed_files(kind, &|_| false, &|_| None)
                .err()
                .unwrap_or_default(),
        };
        return Err(Error::MissingFile {
            path: place,
            what: format!(
                "offline and `{spec}` is not complete in the Hugging Face cache; missing: {}. Place the \
                 files there (with refs/main holding the commit), or download the repository \
                 anywhere and pass its directory instead of the hub id",
                missing.join(", ")
            ),
        });
    }
    download(spec, kind, &cache)
}

fn download(spec: &str, kind: RepoKind, cache: &Path) -> Result<PathBuf> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Runtime(format!(
            "could not {what} `{spec}` from the Hugging Face hub: {e}. Without network access, \
             download the repository elsewhere and pass its directory, or use --offline with a \
             populated cache"
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(crate::progress::enabled())
        .build()
        .map_err(|e| fail("connect for", &e))?;
    let repo = api.model(spec.to_string());
    let info = repo.info().map_err(|e| fail("list the files of", &e))?;
    let listed: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let have = |f: &str| listed.iter().any(|l| l == f);
    // the index must be local before its shards are known
    let mut local_index = None;
    for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
        if have(index) {
            local_index = Some(repo.get(index).map_err(|e| fail("download", &e))?);
            break;
        }
    }
    let read = |_: &str| local_index.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let files = needed_files(kind, &have, &read)
        .map_err(|missing| Error::Checkpoint(format!("`{spec}` on the hub lacks {}", missing.join(", "))))?;
    let mut dir = None;
    for f in files {
        let cached = cached_snapshot(cache, spec).is_some_and(|s| s.join(&f).exists());
        let meta = if cached {
            None
        } else {
            Some(api.metadata(&repo.url(&f)).map_err(|e| fail("download", &e))?)
        };
        let p = repo.get(&f).map_err(|e| fail("download", &e))?;
        if let Some(m) = meta {
            verify_download(&p, m.size() as u64, m.etag())?;
        }
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| Error::Runtime(format!("`{spec}`: nothing downloaded")))
}

/// Checks a file just downloaded into the cache: its size, and for large (LFS) files, whose
/// etag is their SHA-256, its content. A bad file is removed so that the next run downloads it
/// again instead of trusting it.
fn verify_download(path: &Path, size: u64, etag: &str) -> Result<()> {
    let found = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let problem = if found != size {
        Some(format!("it has {found} bytes, the hub announced {size}"))
    } else if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let digest = sha256_file(path)?;
        (digest != etag.to_ascii_lowercase())
            .then(|| format!("its SHA-256 is {digest}, the hub announced {etag}"))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => {
            if let Ok(blob) = std::fs::canonicalize(path) {
                let _ = std::fs::remove_file(blob);
            }
            let _ = std::fs::remove_file(path);
            Err(Error::Runtime(format!(
                "{}: the download is corrupt ({why}); it was removed, run again to download it anew",
                path.display()
            )))
        }
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(is_hub_id("ZechenBai/VideoLISA-3.8B"));
        assert!(is_hub_id("openai/clip-vit-large-patch14-336"));
        assert!(!is_hub_id("./model"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
        assert!(local_path_reason("ZechenBai/VideoLISA-3.8B").is_none());
        assert!(local_path_reason("./model").is_some() && local_path_reason("/abs/path").is_some());
        // tests run in the crate root, where `tests/` is a folder: `tests/videolis` is a typo
        let why = local_path_reason("tests/videolis").unwrap();
        assert!(why.contains("`tests/` is a folder here"), "{why}");
        let e = resolve("tests/videolis", RepoKind::VideoLisa, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such checkpoint folder"), "{e}");
    }

    #[test]
    fn needed_files_follow_the_index() {
        let files = [
            "config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "tokenizer.model",
        ];
        let have = |f: &str| files.contains(&f);
        let read = |_: &str| {
            Some(r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#.to_string())
        };
        let missing = needed_files(RepoKind::VideoLisa, &have, &read).unwrap_err();
        assert_eq!(missing, vec!["model-00002-of-00002.safetensors".to_string()]);
    }
}
