//! Running mean and standard deviation of observations (Welford's algorithm, f64),
//! with an exact-order merge so statistics gathered in parallel combine the same way
//! whatever the number of threads.

use anyhow::bail;

/// A standard deviation below this counts as 1 when normalising (a coordinate that
/// never moved then normalises to 0 anyway, since `s - mu` is 0).
pub const MIN_STD: f64 = 1e-7;

/// Count, mean and sum of squared deviations of every coordinate of the states pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl RunningStats {
    /// No states yet: normalises as the identity (mean 0, std 1).
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Rebuilds statistics from their parts (a checkpoint); checks sizes and values.
    pub fn from_parts(count: u64, mean: Vec<f64>, m2: Vec<f64>) -> anyhow::Result<Self> {
        if mean.len() != m2.len() {
            bail!(
                "observation statistics: expected mean and m2 of one size, found {} and {}",
                mean.len(),
                m2.len()
            );
        }
        if mean.iter().any(|x| !x.is_finite()) || m2.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
            bail!("observation statistics: expected finite values (m2 >= 0), found {mean:?} and {m2:?}");
        }
        Ok(Self { count, mean, m2 })
    }

    /// Observation size.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// States pushed (directly or through merges).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of every coordinate (0 before any state).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Sum of squared deviations from the mean of every coordinate.
    pub fn m2(&self) -> &[f64] {
        &self.m2
    }

    /// Adds one state (of [`RunningStats::dim`] values).
    pub fn push(&mut self, state: &[f32]) {
        debug_assert_eq!(state.len(), self.dim());
        self.count += 1;
        let n = self.count as f64;
        for ((mean, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(state) {
            let x = f64::from(x);
            let d = x - *mean;
            *mean += d / n;
            *m2 += d * (x - *mean);
        }
    }

    /// Adds the states summarised by `other` (Chan et al.'s pairwise update).
    pub fn merge(&mut self, other: &RunningStats) {
        debug_assert_eq!(other.dim(), self.dim());
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        for i in 0..self.mean.len() {
            let d = other.mean[i] - self.mean[i];
            self.mean[i] += d * nb / n;
            self.m2[i] += other.m2[i] + d * d * na * nb / n;
        }
        self.count += other.count;
    }

    /// The population standard deviation of every coordinate; 1 where it is below
    /// [`MIN_STD`] or fewer than two states were seen.
    pub fn std(&self) -> Vec<f64> {
        self.m2
            .iter()
            .map(|&m2| {
                let std = if self.count < 2 {
                    0.0
                } else {
                    (m2 / self.count as f64).sqrt()
                };
                if std < MIN_STD {
                    1.0
                } else {
                    std
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_matches_pushing_everything() {
        let states: Vec<[f32; 2]> = (0..50)
            .map(|i| [(i as f32 * 0.37).sin() * 3.0, 5.0 + (i % 7) as f32])
            .collect();
        let mut all = RunningStats::new(2);
        states.iter().for_each(|s| all.push(s));
        let mut merged = RunningStats::new(2);
        for chunk in states.chunks(13) {
            let mut part = RunningStats::new(2);
            chunk.iter().for_each(|s| part.push(s));
            merged.merge(&part);
        }
        assert_eq!(merged.count(), 50);
        for i in 0..2 {
            assert!((merged.mean()[i] - all.mean()[i]).abs() < 1e-12);
            assert!((merged.std()[i] - all.std()[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn identity_before_data_and_for_constant_coordinates() {
        let mut s = RunningStats::new(2);
        assert_eq!(s.std(), vec![1.0, 1.0]);
        s.push(&[1.0, 2.0]);
        s.push(&[1.0, 4.0]);
        assert_eq!(s.mean(), &[1.0, 3.0]);
        assert_eq!(s.std(), vec![1.0, 1.0]);
        s.push(&[1.0, 3.0]);
        assert!((s.std()[1] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }
}
