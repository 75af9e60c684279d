//! Batch job lists (`batch jobs.csv`, `jobs.jsonl`, stdin lines): any text gives jobs and
//! problems, never a panic, and every row is accounted for (a job or a problem naming its line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use videolisa::batch::jobs::{duplicate_ids, parse_csv, parse_jsonl, JobDefaults};
use videolisa::tokenizer::Template;

const D: JobDefaults = JobDefaults {
    template: Template::Referring,
    mask_value: 255,
    overlay: false,
    rle: false,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let base = Path::new("/nonexistent");
    let lines = text.lines().count();
    let (jobs, problems) = parse_jsonl("j.jsonl", &text, base, &D);
    let rows = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(jobs.len() + problems.len(), rows);
    let _ = duplicate_ids(&jobs);
    if let Ok((jobs, problems)) = parse_csv("j.csv", &text, base, &D) {
        for origin in jobs.iter().map(|j| &j.origin).chain(problems.iter().map(|p| &p.origin)) {
            let line: usize = origin.strip_prefix("j.csv line ").unwrap().parse().unwrap();
            assert!(line <= lines + 1, "{origin} of {lines} lines");
        }
        let _ = duplicate_ids(&jobs);
    }
});
