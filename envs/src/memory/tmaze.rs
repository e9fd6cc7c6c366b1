//! The passive and active T-Mazes of Ni et al. (2023): a cue at the start of a long
//! corridor says which arm of the junction at its end is the goal.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::check_length;
use crate::flow_env::{discrete, impl_gym_env};
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

/// Move one cell right along the corridor.
const RIGHT: usize = 0;
/// Move up (row +1), only at the junction.
const UP: usize = 1;
/// Move one cell left along the corridor.
const LEFT: usize = 2;
/// Move down (row -1), only at the junction.
const DOWN: usize = 3;

/// A T-Maze with memory length `L`.
///
/// Passive (`TMaze-Passive-L{L}`): corridor `x = 0..=L`, junction at `x = L`, the
/// agent starts on the cue at `x = 0`, the episode lasts `L + 1` steps and a step is
/// penalised `-1/L` when `x < t`. Active (`TMaze-Active-L{L}`): the agent starts at
/// `x = 1` and must step left onto the cue at `x = 0`, junction at `x = L + 1`,
/// `L + 3` steps, penalty when `x < t - 1`. Observation `[0, g]` the first time the
/// agent stands at `x = 0`, `[1, y]` at the junction column, `[0, 0]` elsewhere.
/// Actions: 0 right, 1 up, 2 left, 3 down; moves off the maze leave the agent in
/// place. The last step pays 1 when the agent's row `y` equals the goal side `g`,
/// ends the episode (terminated) and reports success.
#[derive(Clone, Debug)]
pub struct TMaze {
    active: bool,
    length: usize,
    x: usize,
    y: i32,
    goal: i32,
    t: usize,
    cue_seen: bool,
    rng: ChaCha8Rng,
}

impl TMaze {
    /// A passive (`active = false`) or active T-Maze of memory length `length >= 1`,
    /// reset from a generator seeded with 0; errors when `length` is 0.
    pub fn new(active: bool, length: usize) -> Result<Self, EnvError> {
        let mut env = TMaze {
            active,
            length: check_length("T-Maze", length)?,
            x: 0,
            y: 0,
            goal: 1,
            t: 0,
            cue_seen: false,
            rng: rand::SeedableRng::seed_from_u64(0),
        };
        env.reset_native(None);
        Ok(env)
    }

    /// The junction's corridor position.
    pub fn junction(&self) -> usize {
        self.length + usize::from(self.active)
    }

    /// The number of steps of an episode.
    pub fn horizon(&self) -> usize {
        self.length + if self.active { 3 } else { 1 }
    }

    /// The goal side `g` (+1 up, -1 down) of the current episode.
    pub fn goal(&self) -> i32 {
        self.goal
    }

    /// The observation at the current cell; the cue shows only on the first visit of `x = 0`.
    fn observe(&mut self) -> Obs {
        if self.x == 0 && !self.cue_seen {
            self.cue_seen = true;
            vec![0.0, self.goal as f32]
        } else if self.x == self.junction() {
            vec![1.0, self.y as f32]
        } else {
            vec![0.0, 0.0]
        }
    }

    /// The cell after `action`; moves off the maze leave the agent in place.
    fn moved(&self, action: usize) -> (usize, i32) {
        let (x, y) = (self.x, self.y);
        let at_junction = x == self.junction();
        match action {
            RIGHT if y == 0 && x < self.junction() => (x + 1, y),
            LEFT if y == 0 && x > 0 => (x - 1, y),
            UP if at_junction && y < 1 => (x, y + 1),
            DOWN if at_junction && y > -1 => (x, y - 1),
            _ => (x, y),
        }
    }

    /// Steps along the optimal route, choosing the arm `side` at the junction.
    fn route(&self, side: i32) -> usize {
        if self.active && !self.cue_seen {
            LEFT
        } else if self.x < self.junction() || self.y != 0 && self.y == side {
            RIGHT
        } else if side > self.y {
            UP
        } else {
            DOWN
        }
    }
}

impl FlowEnv for TMaze {
    fn id(&self) -> String {
        let kind = if self.active { "Active" } else { "Passive" };
        format!("TMaze-{kind}-L{}", self.length)
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = rand::SeedableRng::seed_from_u64(seed);
        }
        self.goal = if self.rng.gen_bool(0.5) { 1 } else { -1 };
        self.x = usize::from(self.active);
        self.y = 0;
        self.t = 0;
        self.cue_seen = false;
        self.observe()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let action = discrete(|| self.id(), action, 4);
        (self.x, self.y) = self.moved(action);
        self.t += 1;
        let last = self.t >= self.horizon();
        let schedule = self.x + usize::from(self.active);
        let reward = if self.t == self.horizon() {
            f64::from(u8::from(self.y == self.goal))
        } else if !last && schedule < self.t {
            -1.0 / self.length as f64
        } else {
            0.0
        };
        Step {
            obs: self.observe(),
            reward,
            terminated: last,
            truncated: false,
            success: last.then_some(self.y == self.goal),
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Discrete { n: 4 }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        (vec![0.0, -1.0], vec![1.0, 1.0])
    }

    fn obs_dim(&self) -> usize {
        2
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.horizon())
    }

    /// The optimal route: (active: left onto the cue,) right to the junction, then
    /// the goal arm.
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        Action::Discrete(self.route(self.goal))
    }

    /// Walks the corridor like the expert but picks the junction arm at random.
    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action {
        let side = if self.x == self.junction() && self.y != 0 {
            self.y
        } else if rng.gen_bool(0.5) {
            1
        } else {
            -1
        };
        Action::Discrete(self.route(side))
    }
}

impl_gym_env!(TMaze);

/// The exact expected return of the uniform random policy, by dynamic programming
/// over the distribution of the agent's cell (the goal side is independent of it).
pub(crate) fn random_return(active: bool, length: usize) -> Result<f64, EnvError> {
    let maze = TMaze::new(active, length)?;
    let junction = maze.junction();
    // Index: x for the corridor row, then junction + 1 for y = +1, junction + 2 for y = -1.
    let cells = junction + 3;
    let cell = |x: usize, y: i32| match y {
        0 => x,
        1 => junction + 1,
        _ => junction + 2,
    };
    let mut probability = vec![0.0f64; cells];
    probability[usize::from(active)] = 1.0;
    let mut expected = 0.0;
    let mut probe = maze.clone();
    for t in 1..=maze.horizon() {
        let mut next = vec![0.0f64; cells];
        for (index, &p) in probability.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            let (x, y) = match index {
                i if i <= junction => (i, 0),
                i if i == junction + 1 => (junction, 1),
                _ => (junction, -1),
            };
            probe.x = x;
            probe.y = y;
            for action in [RIGHT, UP, LEFT, DOWN] {
                let (nx, ny) = probe.moved(action);
                next[cell(nx, ny)] += p / 4.0;
            }
        }
        probability = next;
        if t < maze.horizon() {
            let behind: f64 = (0..=junction)
                .filter(|&x| x + usize::from(active) < t)
                .map(|x| probability[x])
                .sum::<f64>()
                + if junction + usize::from(active) < t {
                    probability[junction + 1] + probability[junction + 2]
                } else {
                    0.0
                };
            expected -= behind / length as f64;
        } else {
            expected += 0.5 * (probability[junction + 1] + probability[junction + 2]);
        }
    }
    Ok(expected)
}
