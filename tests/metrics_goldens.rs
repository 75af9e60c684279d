//! J and F against the golden values of davis2017-evaluation (benchmarks.md §2.8: cases A–K, the
//! three-frame clip, the Hungarian swap) and against the official code on real-shaped masks
//! (tests/fixtures/davis_masks, goldens from tools/reference/metrics_goldens.py).

mod common;

use videolisa::eval::metrics::{boundary_counts, f_measure, jaccard, max_assignment, mean, BinMask};

fn rect(h: usize, w: usize, r0: usize, r1: usize, c0: usize, c1: usize) -> BinMask {
    let mut m = BinMask::empty(w, h);
    for r in r0..r1 {
        for c in c0..c1 {
            m.data[r * w + c] = 1;
        }
    }
    m
}

fn circle(h: usize, w: usize, cy: i64, cx: i64, rad: i64) -> BinMask {
    let mut m = BinMask::empty(w, h);
    for r in 0..h as i64 {
        for c in 0..w as i64 {
            if (r - cy) * (r - cy) + (c - cx) * (c - cx) <= rad * rad {
                m.data[(r as usize) * w + c as usize] = 1;
            }
        }
    }
    m
}

fn full(h: usize, w: usize) -> BinMask {
    rect(h, w, 0, h, 0, w)
}

#[test]
fn golden_cases_a_to_k() {
    let (h, w) = (480, 854);
    let gt = rect(h, w, 100, 300, 200, 500);
    let empty = BinMask::empty(w, h);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, BinMask, BinMask, f64, Option<(u64, u64, u64, u64)>, f64)> = vec![
        (
            "A",
            gt.clone(),
            rect(h, w, 110, 310, 210, 520),
            0.8236173393,
            Some((1020, 1000, 34, 34)),
            0.0336633663,
        ),
        (
            "B",
            gt.clone(),
            rect(h, w, 100, 300, 220, 520),
            0.8750000000,
            Some((1000, 1000, 594, 594)),
            0.5940000000,
        ),
        ("C", gt.clone(), empty.clone(), 0.0, None, 0.0),
        ("D", empty.clone(), empty.clone(), 1.0, None, 1.0),
        ("E", gt.clone(), full(h, w), 0.1463700234, None, 0.0),
        ("F", empty.clone(), rect(h, w, 10, 20, 10, 20), 0.0, None, 0.0),
        (
            "G",
            gt.clone(),
            gt.clone(),
            1.0,
            Some((1000, 1000, 1000, 1000)),
            1.0,
        ),
        (
            "H",
            circle(720, 1280, 360, 640, 100),
            circle(720, 1280, 365, 650, 105),
            0.8581839669,
            Some((844, 804, 608, 600)),
            0.7330953989,
        ),
        (
            "I",
            rect(10, 10, 2, 7, 3, 8),
            rect(10, 10, 3, 8, 3, 9),
            0.5714285714,
            Some((22, 20, 21, 20)),
            0.9767441860,
        ),
        (
            "J",
            rect(h, w, 0, 480, 0, 300),
            rect(h, w, 0, 480, 0, 310),
            0.9677419355,
            Some((480, 480, 0, 0)),
            0.0,
        ),
        ("K", full(h, w), full(h, w), 1.0, None, 1.0),
    ];
    for (id, g, p, j, counts, f) in cases {
        let gj = jaccard(&g, &p, None);
        let gf = f_measure(&g, &p, None);
        println!("{id}: J {gj:.10} F {gf:.10}");
        assert!((gj - j).abs() < 1e-9, "{id}: J {gj} vs {j}");
        assert!((gf - f).abs() < 1e-9, "{id}: F {gf} vs {f}");
        // F is symmetric, edge cases included
        assert!(
            (f_measure(&p, &g, None) - gf).abs() < 1e-15,
            "{id}: F not symmetric"
        );
        if let Some((n_fg, n_gt, fm, gm)) = counts {
            let c = boundary_counts(&g, &p, None);
            assert_eq!(
                (c.n_fg, c.n_gt, c.fg_match, c.gt_match),
                (n_fg, n_gt, fm, gm),
                "{id}"
            );
        }
    }
}

#[test]
fn three_frame_clip() {
    let (h, w) = (480, 854);
    let gts = [
        rect(h, w, 100, 300, 200, 500),
        BinMask::empty(w, h),
        rect(h, w, 50, 60, 50, 60),
    ];
    let prs = [
        rect(h, w, 110, 310, 210, 520),
        BinMask::empty(w, h),
        BinMask::empty(w, h),
    ];
    let j: Vec<f64> = gts.iter().zip(&prs).map(|(g, p)| jaccard(g, p, None)).collect();
    let f: Vec<f64> = gts.iter().zip(&prs).map(|(g, p)| f_measure(g, p, None)).collect();
    assert!((mean(&j) - 0.6078724464).abs() < 1e-9);
    assert!((mean(&f) - 0.3445544554).abs() < 1e-9);
    assert!(((mean(&j) + mean(&f)) / 2.0 - 0.4762134509).abs() < 1e-9);
}

#[test]
fn hungarian_swap_scores_one() {
    let (h, w) = (480, 854);
    let g = [rect(h, w, 100, 200, 100, 200), rect(h, w, 300, 400, 500, 700)];
    let p = [g[1].clone(), g[0].clone()]; // prediction ids swapped
    let score: Vec<Vec<f64>> = p
        .iter()
        .map(|pm| {
            g.iter()
                .map(|gm| (jaccard(gm, pm, None) + f_measure(gm, pm, None)) / 2.0)
                .collect()
        })
        .collect();
    let a = max_assignment(&score);
    assert_eq!(a, vec![1, 0]);
    assert!(a.iter().enumerate().all(|(gi, &pi)| score[pi][gi] == 1.0));
}

#[test]
fn real_shaped_masks_match_the_official_code() {
    let dir = common::fixture("davis_masks");
    let goldens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    let labels = |p: &std::path::Path| videolisa::output::read_mask_png(p).unwrap();
    let mut worst = 0f64;
    for g in goldens.as_array().unwrap() {
        let file = g["file"].as_str().unwrap();
        let gt = labels(&dir.join(format!("osvos_{file}")));
        let pr = labels(&dir.join(format!("rvos_{file}")));
        let (w, h) = (gt.width() as usize, gt.height() as usize);
        let pair = g["pair"].as_str().unwrap();
        let (gm, pm) = if pair == "any" {
            (
                BinMask::from_bytes(w, h, gt.as_raw()),
                BinMask::from_bytes(w, h, pr.as_raw()),
            )
        } else {
            let (a, b) = pair.trim_start_matches("gt").split_once("_pr").unwrap();
            (
                BinMask::from_label(w, h, gt.as_raw(), a.parse().unwrap()),
                BinMask::from_label(w, h, pr.as_raw(), b.parse().unwrap()),
            )
        };
        let (j, f) = (jaccard(&gm, &pm, None), f_measure(&gm, &pm, None));
        let err = (j - g["J"].as_f64().unwrap())
            .abs()
            .max((f - g["F"].as_f64().unwrap()).abs());
        assert!(err < 1e-12, "{file} {pair}: J {j} F {f} vs {g}");
        worst = worst.max(err);
    }
    println!(
        "{} real-shaped pairs, max |diff| {worst:.1e}",
        goldens.as_array().unwrap().len()
    );
}
