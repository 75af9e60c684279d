//! `--shard i/n`: which part of a job list or benchmark split one process runs, shared by
//! `batch` and `eval` so that both split work the same way (every n-th item, from item i).

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`: the items whose position p has `p % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards the work is split into (≥ 1).
    pub count: usize,
}

impl Shard {
    /// All of the work in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Whether this shard is all of the work.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether the item at position `p` belongs to this shard.
    pub fn owns(&self, p: usize) -> bool {
        p % self.count == self.index
    }

    /// This shard's items, in their order.
    pub fn take<'a, T>(&self, items: &'a [T]) -> Vec<&'a T> {
        items
            .iter()
            .enumerate()
            .filter(|(p, _)| self.owns(*p))
            .map(|(_, t)| t)
            .collect()
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard {s}: expected i/n with 0 ≤ i < n");
        let (a, b) = s.split_once('/').ok_or_else(bad)?;
        let index = a.trim().parse::<usize>().map_err(|_| bad())?;
        let count = b.trim().parse::<usize>().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_splits() {
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "x", "0/0", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s.take(&[0, 1, 2, 3, 4, 5, 6]), vec![&1, &4]);
        assert_eq!(Shard::WHOLE.take(&[7, 8]), vec![&7, &8]);
        assert_eq!(s.to_string(), "1/3");
    }
}
