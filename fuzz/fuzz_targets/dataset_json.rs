//! The dataset readers on arbitrary meta_expressions.json / mask_dict.json contents: an error
//! naming the file, never a panic, and never a path outside the dataset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use videolisa::eval::datasets::{Dataset, DatasetKind};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let kinds = [
        (DatasetKind::Mevis, "valid_u/meta_expressions.json", "valid_u"),
        (DatasetKind::RefYtvos, "meta_expressions/valid/meta_expressions.json", "valid"),
        (DatasetKind::RefDavis, "meta_expressions/valid/meta_expressions.json", "valid"),
        (DatasetKind::Reasonvos, "meta_expressions.json", "all"),
    ];
    for (kind, file, split) in kinds {
        let p = r.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        if let Ok(ds) = Dataset::load(kind, r, split) {
            for v in &ds.videos {
                for e in &v.expressions {
                    assert!(!e.out_dir.contains(".."), "{}", e.out_dir);
                    assert!(!e.out_dir.starts_with('/'));
                }
                for p in &v.frame_paths {
                    assert!(p.starts_with(r));
                }
            }
        }
    }
    // mask_dict.json through the MeViS scorer's reader
    let md = r.join("mask_dict.json");
    std::fs::write(&md, data).unwrap();
    if let Ok(d) = videolisa::eval::score::MaskDict::open(&md) {
        for t in 0..3 {
            let _ = d.union(&["0".to_string(), "1".to_string()], t);
        }
    }
});
