//! Frame sampling against numpy (tests/fixtures/sampling.txt from tools/reference/) and a
//! property test for every T in 1..=2000 against a plain f64 transcription of the formula.

mod common;

use videolisa::sampling::{dense_indices, sparse_indices, Sampling};

#[test]
fn matches_numpy_reference() {
    let text = std::fs::read_to_string(common::fixture("sampling.txt")).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let parts: Vec<&str> = line.split('|').collect();
        let head: Vec<usize> = parts[0].split_whitespace().map(|v| v.parse().unwrap()).collect();
        let (t, ns, nd) = (head[0], head[1], head[2]);
        let sparse: Vec<usize> = parts[1].split_whitespace().map(|v| v.parse().unwrap()).collect();
        let dense: Vec<i64> = parts[2].split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert_eq!(sparse_indices(t, ns), sparse, "T={t} sparse={ns}");
        // Python negative indices address from the end of the sparse list.
        let dense: Vec<usize> = dense
            .iter()
            .map(|&d| {
                if d < 0 {
                    (d + ns as i64) as usize
                } else {
                    d as usize
                }
            })
            .collect();
        assert_eq!(dense_indices(ns, nd), dense, "sparse={ns} dense={nd}");
        n += 1;
    }
    assert!(n > 2000);
    println!("sampling: {n} cases identical to numpy");
}

/// The formula written out directly: `int(i * (T / n))` boundaries, midpoints by floor division.
fn transcription(total: usize, n: usize) -> Vec<i64> {
    let bound = |i: usize| -> i64 {
        if i == n {
            total as i64
        } else {
            (i as f64 * (total as f64 / n as f64)) as i64
        }
    };
    (0..n)
        .map(|i| (bound(i) + bound(i + 1) - 1).div_euclid(2))
        .collect()
}

#[test]
fn property_every_length_up_to_2000() {
    for t in 1..=2000usize {
        let s = Sampling::new(t, 32, 4).unwrap();
        let mut expect: Vec<usize> = if t > 32 {
            transcription(t, 32).into_iter().map(|v| v as usize).collect()
        } else {
            let mut v: Vec<usize> = (0..32 / t).flat_map(|_| 0..t).collect();
            v.extend(transcription(t, 32 % t).into_iter().map(|v| v as usize));
            v
        };
        expect.sort_unstable();
        assert_eq!(s.sparse, expect, "T={t}");
        assert_eq!(s.sparse.len(), 32);
        assert!(s.sparse.windows(2).all(|w| w[0] <= w[1]), "T={t}: sorted");
        assert!(s.sparse.iter().all(|&i| i < t), "T={t}: in range");
        if t <= 32 {
            assert!((0..t).all(|f| s.sparse.contains(&f)), "T={t}: every frame used");
        } else {
            assert!(s.sparse.windows(2).all(|w| w[0] < w[1]), "T={t}: distinct");
        }
        assert_eq!(s.dense, vec![3, 10, 18, 26]);
    }
}
