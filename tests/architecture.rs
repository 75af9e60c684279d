//! The layering of `src/`, drawn from the code: every `crate::` path a module names must lead to
//! a module on a lower layer (so there are no import circles, and nothing below reaches up),
//! and inside `segment/` the parts import only the parts below them, never the orchestrator.
//! A new module must be given its layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (see the crate documentation in src/lib.rs).
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["device", "names", "shard", "progress", "output"],
    &["lock"],
    &["json"],
    &[
        "video",
        "sampling",
        "preprocess",
        "tokenizer",
        "weights",
        "hub",
        "demo",
    ],
    &["model"],
    &["load", "run_manifest"],
    &["setup", "segment", "propagate"],
    &["batch", "eval", "live"],
    &["commands"],
];

/// The files of `segment/` by layer; `mod` (the orchestrator) is above them all.
const SEGMENT_LAYERS: &[&[&str]] = &[
    &["prompt", "sink", "dump", "annotation"],
    &["stage"],
    &["sam", "summary", "encode"],
    &["xmem", "refresh", "cache"],
    &["rerun"],
    &["mod"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's code without comments and without its unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `prefix` in `code`, including those in `prefix{a::…, b::…}` groups.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for part in top_level_parts(group) {
                let name = ident(part.trim());
                if part.trim().starts_with(&format!("{name}::")) {
                    found.insert(name);
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|n| !n.is_empty());
    found
}

/// The comma-separated parts of a `{…}` group (`group` starts after its `{`), nested groups
/// kept whole.
fn top_level_parts(group: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                parts.push(&group[start..i]);
                return parts;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[start..]);
    parts
}

fn layer_of(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&name))
}

/// Edges that do not go strictly down, as `from -> to` lines.
fn upward(edges: &BTreeMap<String, BTreeSet<String>>, layers: &[&[&str]]) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in edges {
        let lf =
            layer_of(layers, from).unwrap_or_else(|| panic!("module `{from}` has no layer in the table"));
        for to in tos {
            let lt =
                layer_of(layers, to).unwrap_or_else(|| panic!("module `{to}` has no layer in the table"));
            if lt >= lf {
                bad.push(format!("{from} (layer {lf}) -> {to} (layer {lt})"));
            }
        }
    }
    bad
}

/// Prints the graph and fails on any edge that does not go down a layer.
fn assert_downward(edges: &BTreeMap<String, BTreeSet<String>>, layers: &[&[&str]]) {
    for (from, tos) in edges {
        println!("{from} -> {tos:?}");
    }
    let bad = upward(edges, layers);
    assert!(
        bad.is_empty(),
        "imports that do not go down a layer:\n{}",
        bad.join("\n")
    );
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap();
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let targets = names_after(&code(f), "crate::");
        let entry = edges.entry(top.clone()).or_default();
        entry.extend(
            targets
                .into_iter()
                .filter(|t| *t != top && t != "Error" && t != "Result"),
        );
    }
    assert_downward(&edges, LAYERS);
}

#[test]
fn segment_parts_import_only_parts_below_them() {
    let dir = src().join("segment");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let parts: BTreeSet<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let c = code(f);
        let mut targets: BTreeSet<String> = names_after(&c, "crate::segment::");
        if name == "mod" {
            targets.extend(
                c.lines()
                    .filter_map(|l| l.trim().strip_prefix("use "))
                    .filter_map(|u| {
                        let first = u.split("::").next()?;
                        parts.contains(first).then(|| first.to_string())
                    }),
            );
        } else {
            // `super::x::…` is a sibling part; `super::Name` is the orchestrator
            targets.extend(names_after(&c, "super::").into_iter().map(|t| {
                if parts.contains(&t) {
                    t
                } else {
                    "mod".to_string()
                }
            }));
        }
        targets.remove(&name);
        edges.insert(name, targets);
    }
    assert_downward(&edges, SEGMENT_LAYERS);
}

#[test]
fn the_checker_sees_an_upward_import() {
    let edges = BTreeMap::from([("model".to_string(), BTreeSet::from(["load".to_string()]))]);
    assert_eq!(upward(&edges, LAYERS), vec!["model (layer 5) -> load (layer 6)"]);
    let groups = names_after("use crate::{model::{a::B, c}, load::X, Result};", "crate::");
    assert_eq!(groups, BTreeSet::from(["load".to_string(), "model".to_string()]));
}
