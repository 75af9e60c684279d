//! Weights from a hub id, end to end, against a local HTTP server that answers like the Hugging
//! Face hub (`HF_ENDPOINT`): the repository listing, `resolve/main/<file>` with `Range`,
//! `x-repo-commit` and `etag` (the SHA-256 of large files). Files land in the standard cache
//! layout (`models--owner--name/{blobs,refs,snapshots}`) that Python's huggingface_hub reads; a
//! download cut off mid-file fails clearly and the next run resumes it; a later run needs no
//! server at all.

mod common;

use common::{fixture, repo, sha256, text};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Repository id → (file name → bytes).
type Repos = HashMap<String, Vec<(String, Vec<u8>)>>;

struct FakeHub {
    port: u16,
    /// Files served so far with a full (non-probe) body, by name.
    served: Arc<Mutex<Vec<String>>>,
}

fn repo_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8], send: usize) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body[..send.min(body.len())]);
    let _ = stream.flush();
}

/// Answers one request; `cut` names a file whose first full download is cut off halfway.
fn handle(
    mut stream: TcpStream,
    repos: &Repos,
    cut: &AtomicBool,
    cut_file: &str,
    served: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let id = rest.trim_end_matches("/revision/main");
        let Some(files) = repos.get(id) else {
            return respond(&mut stream, "404 Not Found", &[], b"{}", 2);
        };
        let siblings: Vec<_> = files
            .iter()
            .map(|(n, _)| serde_json::json!({"rfilename": n}))
            .collect();
        let body = serde_json::json!({"id": id, "sha": COMMIT, "siblings": siblings}).to_string();
        let h = [("Content-Type".to_string(), "application/json".to_string())];
        return respond(&mut stream, "200 OK", &h, body.as_bytes(), body.len());
    }
    let found = repos.iter().find_map(|(id, files)| {
        let name = path.strip_prefix(&format!("/{id}/resolve/main/"))?;
        files.iter().find(|(n, _)| n == name)
    });
    let Some((name, bytes)) = found else {
        return respond(&mut stream, "404 Not Found", &[], b"", 0);
    };
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(bytes.len() - 1)),
        None => (0, bytes.len() - 1),
    };
    let body = &bytes[start..=end.min(bytes.len() - 1)];
    let headers = vec![
        ("x-repo-commit".to_string(), COMMIT.to_string()),
        ("ETag".to_string(), format!("\"{}\"", sha256(bytes))),
        (
            "Content-Range".to_string(),
            format!("bytes {start}-{}/{}", start + body.len() - 1, bytes.len()),
        ),
    ];
    let probe = end == 0 && start == 0 && range.is_some() && body.len() == 1;
    let mut send = body.len();
    if !probe {
        served.lock().unwrap().push(name.clone());
        if name == cut_file && !cut.swap(true, Ordering::SeqCst) {
            send = body.len() / 2;
        }
    }
    respond(&mut stream, "206 Partial Content", &headers, body, send);
}

fn start_hub(repos: Repos, cut_file: &str) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(Mutex::new(Vec::new()));
    let (s, cut_file) = (served.clone(), cut_file.to_string());
    std::thread::spawn(move || {
        let cut = AtomicBool::new(false);
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut peek = [0u8; 4];
            if stream.peek(&mut peek).is_ok() {
                handle(stream, &repos, &cut, &cut_file, &s);
            } else {
                let _ = stream.read(&mut peek);
            }
        }
    });
    FakeHub { port, served }
}

fn segment(endpoint: &str, hf_home: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args([
            "segment",
            "--video",
            repo("examples/demo/frames/00003.jpg").to_str().unwrap(),
            "-p",
            "the ball",
            "--out",
            out.to_str().unwrap(),
            "--model",
            "test/videolisa-tiny",
            "--clip",
            "test/clip-tiny",
        ])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .output()
        .unwrap()
}

#[test]
fn download_resume_cache_layout_and_offline_rerun() {
    let tiny = fixture("videolisa_tiny");
    let model_files = repo_files(&tiny.join("model"));
    let biggest = model_files.iter().max_by_key(|(_, b)| b.len()).unwrap().0.clone();
    let repos: Repos = HashMap::from([
        ("test/videolisa-tiny".to_string(), model_files.clone()),
        ("test/clip-tiny".to_string(), repo_files(&tiny.join("clip"))),
    ]);
    let hub = start_hub(repos, &biggest);
    let endpoint = format!("http://127.0.0.1:{}", hub.port);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();

    // 1. the connection drops halfway through the largest shard: a clear failure
    let o = segment(&endpoint, home.path(), out.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("could not download `test/videolisa-tiny`"),
        "{}",
        text(&o)
    );
    let cache = home.path().join("hub/models--test--videolisa-tiny");
    let part: Vec<_> = std::fs::read_dir(cache.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    assert_eq!(part.len(), 1, "the cut download is kept for resuming");

    // 2. the next run resumes it and completes
    let o = segment(&endpoint, home.path(), out.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/main")).unwrap().trim(),
        COMMIT
    );
    let snapshot = cache.join("snapshots").join(COMMIT);
    for (name, bytes) in &model_files {
        let p = snapshot.join(name);
        assert!(
            std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink(),
            "{name}"
        );
        let blob = std::fs::canonicalize(&p).unwrap();
        assert_eq!(
            blob.parent().unwrap(),
            std::fs::canonicalize(cache.join("blobs")).unwrap()
        );
        assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{name}");
    }
    let resumed = hub
        .served
        .lock()
        .unwrap()
        .iter()
        .filter(|n| **n == biggest)
        .count();
    assert_eq!(
        resumed, 2,
        "the cut shard was requested once more, from where it stopped"
    );
    let masks = std::fs::read(out.path().join("prompt_0/00003.png")).unwrap();

    // 3. no server at all: everything comes from the cache
    let o = segment("http://127.0.0.1:9", home.path(), out.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.path().join("prompt_0/00003.png")).unwrap(),
        masks
    );

    // the same masks as from the local folders
    let local = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args([
            "segment",
            "--video",
            repo("examples/demo/frames/00003.jpg").to_str().unwrap(),
            "-p",
            "the ball",
            "--out",
            local.path().to_str().unwrap(),
            "--model",
            tiny.join("model").to_str().unwrap(),
            "--clip",
            tiny.join("clip").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(local.path().join("prompt_0/00003.png")).unwrap(),
        masks
    );
}
