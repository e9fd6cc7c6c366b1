//! A vector of environments stepped in lockstep, for batched evaluation and collection.

use crate::{make, Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

/// `n` environments of one id, each with its own seed, stepped together (on the
/// thread pool for environments whose steps are costly, such as MuJoCo's; each
/// environment's result is the same either way).
///
/// An environment is *done* after a step that terminated or truncated it, and before
/// its first reset; done environments are not stepped (their actions are ignored and
/// their results are `None`) until [`VecEnv::reset_env`] or [`VecEnv::reset`].
pub struct VecEnv {
    id: String,
    spec: ActionSpec,
    envs: Vec<Box<dyn FlowEnv>>,
    done: Vec<bool>,
    /// Step the environments on the thread pool ([`FlowEnv::steps_in_parallel`]).
    parallel: bool,
}

impl VecEnv {
    /// `n >= 1` environments named `id`, all done until reset.
    pub fn new(id: &str, n: usize) -> Result<Self, EnvError> {
        if n == 0 {
            return Err(EnvError::BadArgument {
                what: format!("number of `{id}` environments in a vector"),
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        let envs = (0..n).map(|_| make(id)).collect::<Result<Vec<_>, _>>()?;
        let spec = envs[0].action_spec();
        let parallel = n > 1 && envs[0].steps_in_parallel();
        Ok(VecEnv {
            id: id.to_string(),
            spec,
            envs,
            done: vec![true; n],
            parallel,
        })
    }

    /// The environment id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Always false: a vector holds at least one environment.
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// The shared action space.
    pub fn action_spec(&self) -> ActionSpec {
        self.spec
    }

    /// Environment `i`, e.g. for a scripted policy to read its state. Panics when
    /// `i >= len()` (an index the caller computes, like slice indexing).
    pub fn env(&self, i: usize) -> &dyn FlowEnv {
        self.envs[i].as_ref()
    }

    /// Which environments are done.
    pub fn done(&self) -> &[bool] {
        &self.done
    }

    /// Whether every environment is done.
    pub fn all_done(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// Resets every environment, environment `i` with `seeds[i]`; returns the first observations.
    pub fn reset(&mut self, seeds: &[u64]) -> Result<Vec<Obs>, EnvError> {
        if seeds.len() != self.envs.len() {
            return Err(
                self.bad_batch("one seed per environment", format!("{} seeds", seeds.len()))
            );
        }
        Ok((0..self.envs.len())
            .map(|i| self.reset_one(i, Some(seeds[i])))
            .collect())
    }

    /// Resets environment `i` (reseeding it when `seed` is given); returns its first observation.
    pub fn reset_env(&mut self, i: usize, seed: Option<u64>) -> Result<Obs, EnvError> {
        if i >= self.envs.len() {
            return Err(self.bad_batch(
                &format!("an environment index below {}", self.envs.len()),
                i.to_string(),
            ));
        }
        Ok(self.reset_one(i, seed))
    }

    fn reset_one(&mut self, i: usize, seed: Option<u64>) -> Obs {
        self.done[i] = false;
        self.envs[i].reset_native(seed)
    }

    /// Steps every environment that is not done with its action (one action per
    /// environment; those of done environments are ignored). Checks every action
    /// before stepping any environment, so an error leaves the vector unchanged.
    pub fn step(&mut self, actions: &[Action]) -> Result<Vec<Option<Step>>, EnvError> {
        if actions.len() != self.envs.len() {
            return Err(self.bad_batch(
                "one action per environment",
                format!("{} actions", actions.len()),
            ));
        }
        for (action, _) in actions.iter().zip(&self.done).filter(|(_, &done)| !done) {
            self.spec.check(&self.id, action)?;
        }
        let step = |((env, action), done): ((&mut Box<dyn FlowEnv>, &Action), &mut bool)| {
            if *done {
                return None;
            }
            let step = env.step_native(action);
            *done = step.done();
            Some(step)
        };
        let lanes = self.envs.iter_mut().zip(actions).zip(self.done.iter_mut());
        Ok(if self.parallel {
            use rayon::prelude::*;
            let lanes: Vec<_> = lanes.collect();
            lanes.into_par_iter().map(step).collect()
        } else {
            lanes.map(step).collect()
        })
    }

    fn bad_batch(&self, expected: &str, found: String) -> EnvError {
        EnvError::BadBatch {
            env: self.id.clone(),
            envs: self.envs.len(),
            expected: expected.to_string(),
            found,
        }
    }
}
