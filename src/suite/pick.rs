//! Which entries of the selected matrix a call runs: all of them, one (`--entry K`,
//! e.g. a Slurm array task's index), or a shard (`--shard I/N`: every N-th from I).
//! Indices count the entries left after `--filter` and `--set`, in run order, from 0;
//! `--dry-run` prints them.

use std::str::FromStr;

use anyhow::bail;

/// A choice among the selected entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pick {
    /// Every selected entry.
    #[default]
    All,
    /// The entry of this index.
    Entry(usize),
    /// Entries `index`, `index + count`, `index + 2 count`, ...
    Shard {
        /// First index, below `count`.
        index: usize,
        /// Number of shards.
        count: usize,
    },
}

impl Pick {
    /// Whether the entry at `index` is picked.
    pub fn picks(&self, index: usize) -> bool {
        match *self {
            Pick::All => true,
            Pick::Entry(k) => k == index,
            Pick::Shard { index: i, count } => index % count == i,
        }
    }

    /// Fails when `--entry K` names no entry of the `selected` ones.
    pub fn check(&self, selected: usize) -> anyhow::Result<()> {
        if let Pick::Entry(k) = *self {
            if k >= selected {
                bail!(
                    "--entry {k}: expected an index from 0 to {} (the entries left after \
                     --filter, as --dry-run lists them), found {k}",
                    selected.saturating_sub(1)
                );
            }
        }
        Ok(())
    }
}

/// A `--shard I/N` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// I.
    pub index: usize,
    /// N.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;

    fn from_str(arg: &str) -> anyhow::Result<Self> {
        let parsed = arg
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => bail!("expected I/N with 0 <= I < N (e.g. 0/4), found `{arg}`"),
        }
    }
}

impl From<Shard> for Pick {
    fn from(s: Shard) -> Self {
        Pick::Shard {
            index: s.index,
            count: s.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_shards() {
        let picked = |p: Pick| (0..7).filter(|&i| p.picks(i)).collect::<Vec<_>>();
        assert_eq!(picked(Pick::All), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(picked(Pick::Entry(3)), [3]);
        let shard: Shard = "1/3".parse().unwrap();
        assert_eq!(picked(shard.into()), [1, 4]);
        // The shards of one N cover every entry exactly once.
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| picked(Pick::Shard { index: i, count: 3 }))
            .collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains(&format!("found `{bad}`")), "{err}");
        }
        assert!(Pick::Entry(6).check(7).is_ok());
        let err = Pick::Entry(7).check(7).unwrap_err().to_string();
        assert!(
            err.contains("from 0 to 6") && err.contains("found 7"),
            "{err}"
        );
    }
}
