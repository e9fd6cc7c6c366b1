//! Two actors of one agent played in lockstep on the same random episodes, for the
//! tests that compare two ways of acting.

use dfdx::prelude::*;
use flowrl_agents::acting::Actor;
use flowrl_agents::agent::{ActionSpace, HostActions};
use flowrl_agents::device::ModelDevice;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{f64_of, max_abs_diff};

/// How the played discrete actions are chosen.
#[derive(Clone, Copy, Debug)]
pub enum Discrete {
    /// Sampled from the first actor's predictions.
    Sampled,
    /// Uniformly at random.
    Uniform,
}

/// Plays `steps` steps of random episodes (random stream `seed`) with `first` and
/// `second` in lockstep, dropping rows as `drops` says (`(step, rows kept)`), and
/// returns the largest difference of their predictions. The played continuous actions
/// are the first actor's predictions plus noise; discrete ones as `discrete` says.
///
/// # Panics
/// If the predictions barely vary (the comparison would prove little).
pub fn lockstep<E>(
    mut first: Actor<'_, E, Cpu>,
    mut second: Actor<'_, E, Cpu>,
    (obs_dim, action): (usize, ActionSpace),
    seed: u64,
    steps: usize,
    drops: &[(usize, Vec<usize>)],
    discrete: Discrete,
) -> f64
where
    E: Dtype + num_traits::Float + Send + Sync,
    Cpu: ModelDevice<E>,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut worst, mut range) = (0.0f64, (f64::INFINITY, f64::NEG_INFINITY));
    for t in 0..steps {
        if let Some((_, keep)) = drops.iter().find(|(s, _)| *s == t) {
            first.keep_rows(keep).unwrap();
            second.keep_rows(keep).unwrap();
        }
        let n = first.batch();
        let returns: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..3.0)).collect();
        let states: Vec<f32> = (0..n * obs_dim).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let p = first.observe(&returns, &states).unwrap();
        let q = second.observe(&returns, &states).unwrap();
        assert_eq!((p.batch, p.width), (q.batch, q.width));
        for &x in &p.values {
            range = (range.0.min(f64_of(x)), range.1.max(f64_of(x)));
        }
        worst = worst.max(max_abs_diff(&p.values, &q.values));
        match action {
            ActionSpace::Continuous { .. } => {
                let acts: Vec<f32> = p
                    .values
                    .iter()
                    .map(|&v| (f64_of(v) as f32 + rng.gen_range(-0.3..0.3)).clamp(-1.0, 1.0))
                    .collect();
                first.record(HostActions::Continuous(&acts)).unwrap();
                second.record(HostActions::Continuous(&acts)).unwrap();
            }
            ActionSpace::Discrete { n } => {
                let acts: Vec<usize> = match discrete {
                    Discrete::Sampled => p.sample(1.0, &mut rng).unwrap(),
                    Discrete::Uniform => (0..p.batch).map(|_| rng.gen_range(0..n)).collect(),
                };
                first.record(HostActions::Discrete(&acts)).unwrap();
                second.record(HostActions::Discrete(&acts)).unwrap();
            }
        }
    }
    assert!(
        range.1 - range.0 > 0.1,
        "predictions barely vary ({range:?}): the comparison would prove little"
    );
    worst
}
