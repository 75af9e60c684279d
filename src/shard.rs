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

impl Shard {
    /// The shard a scheduler gave this process, from its environment (`var` reads a
    /// variable): a Slurm job array task (see `slurm_task`), or a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX`, of `VIDEOLISA_SHARD_COUNT`, which the Job spec sets to its
    /// `completions`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let num = |k: &str| -> Result<Option<usize>, String> {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("{k}={v:?} is not a whole number"))
                })
                .transpose()
        };
        let (index, count) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            slurm_task(id, &num)?
        } else if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num("VIDEOLISA_SHARD_COUNT")?.ok_or(
                "JOB_COMPLETION_INDEX is set: also set VIDEOLISA_SHARD_COUNT to the Job's completions",
            )?;
            (index, count)
        } else {
            return Err(
                "--shard auto: no scheduler shard in the environment (SLURM_ARRAY_TASK_ID and \
                 SLURM_ARRAY_TASK_COUNT from a Slurm job array, or JOB_COMPLETION_INDEX and \
                 VIDEOLISA_SHARD_COUNT from a Kubernetes Indexed Job); give --shard i/n instead"
                    .into(),
            );
        };
        if count == 0 || index >= count {
            return Err(format!(
                "--shard auto: the scheduler's task {index} of {count} is not a shard (a Slurm array \
                 must run tasks 0..n-1, or min..min+n-1, without gaps)"
            ));
        }
        Ok(Shard { index, count })
    }
}

/// A Slurm array task's shard: task `id` counted from `SLURM_ARRAY_TASK_MIN` of
/// `SLURM_ARRAY_TASK_COUNT`, or task `id` of `VIDEOLISA_SHARD_COUNT` when that is set (a
/// resubmitted subset of tasks, `--array=2`, says the split's size itself).
fn slurm_task(
    id: usize,
    num: &dyn Fn(&str) -> Result<Option<usize>, String>,
) -> Result<(usize, usize), String> {
    if let Some(count) = num("VIDEOLISA_SHARD_COUNT")? {
        return Ok((id, count));
    }
    let count = num("SLURM_ARRAY_TASK_COUNT")?
        .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm ≥ 18.08 sets both)")?;
    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let index = id
        .checked_sub(min)
        .ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
    Ok((index, count))
}

impl FromStr for Shard {
    type Err = String;

    /// `i/n`, or `auto` for the scheduler's shard (see [`Shard::from_env`]).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Shard::from_env(|k| std::env::var(k).ok());
        }
        let bad = || format!("--shard {s}: expected i/n with 0 ≤ i < n, or auto");
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

    #[test]
    fn schedulers_give_the_shard() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::from_env(slurm), Ok(Shard { index: 2, count: 4 }));
        let from_one = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]);
        assert_eq!(Shard::from_env(from_one), Ok(Shard { index: 3, count: 4 }));
        let resubmitted = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
            ("VIDEOLISA_SHARD_COUNT", "4"),
        ]);
        assert_eq!(Shard::from_env(resubmitted), Ok(Shard { index: 2, count: 4 }));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "0"), ("VIDEOLISA_SHARD_COUNT", "3")]);
        assert_eq!(Shard::from_env(k8s), Ok(Shard { index: 0, count: 3 }));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")]))
            .unwrap_err()
            .contains("VIDEOLISA_SHARD_COUNT"));
        assert!(Shard::from_env(env(&[]))
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID"));
        let gap = env(&[("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert!(Shard::from_env(gap).unwrap_err().contains("not a shard"));
    }
}
