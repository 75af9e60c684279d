//! `videolisa synthetic`, `eval` and `score` from the command line: outputs, reports, exit codes.

mod common;

use common::{text, videolisa};

#[test]
fn synthetic_eval_score_round_trip() {
    let tiny = common::fixture("videolisa_tiny");
    let (model, clip) = (tiny.join("model"), tiny.join("clip"));
    let data = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let root = data.path().join("mevis");
    common::synthetic("mevis", &root, &["--videos", "2", "--frames", "3"]);
    let out = run.path().join("mevis_u");
    let base = [
        "eval",
        "--dataset",
        "mevis",
        "--root",
        root.to_str().unwrap(),
        "--split",
        "valid_u",
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
    ];
    for shard in ["0/2", "1/2"] {
        let mut a = base.to_vec();
        a.extend(["--shard", shard]);
        let o = videolisa(&a);
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut a = base.to_vec();
    a.push("--merge");
    let o = videolisa(&a);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("J&F"), "{}", text(&o));
    let report = run.path().join("report");
    let o = videolisa(&[
        "score",
        "--dataset",
        "mevis",
        "--root",
        root.to_str().unwrap(),
        "--split",
        "valid_u",
        "--pred",
        out.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores/results.json")).unwrap()).unwrap();
    assert_eq!(
        r["jf"], merged["jf"],
        "score of eval's predictions = eval's own score"
    );
    for f in ["results.json", "per_item.csv", "per_video.csv", "report.md"] {
        assert!(report.join(f).exists(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(report.join("per_item.csv"))
            .unwrap()
            .lines()
            .count(),
        1 + 2 * 3
    );
}

#[test]
fn bad_usage_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("r");
    common::synthetic("reasonvos", &root, &[]);
    let o = videolisa(&[
        "score",
        "--dataset",
        "reasonvos",
        "--root",
        root.to_str().unwrap(),
        "--pred",
        "/no/such/dir",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = videolisa(&[
        "eval",
        "--dataset",
        "reasonvos",
        "--root",
        root.to_str().unwrap(),
        "--out",
        "/tmp/x",
        "--shard",
        "5/2",
        "--offline",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = videolisa(&[
        "score",
        "--dataset",
        "ref-ytvos",
        "--root",
        root.to_str().unwrap(),
        "--pred",
        root.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
