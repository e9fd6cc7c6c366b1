//! Key-to-Door (Raposo et al. 2021, as used by Ni et al. 2023): pick up a key, spend
//! a long distractor phase eating apples, then open a door that pays only with the key.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::check_length;
use crate::flow_env::{discrete, impl_gym_env};
use crate::policy::degrade;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

/// Side of a room including its walls; the floor is `1..=5` in both coordinates.
const ROOM: usize = 7;
/// Steps of the key phase.
pub const KEY_STEPS: usize = 15;
/// Steps of the door phase.
pub const DOOR_STEPS: usize = 10;
/// Apples on the floor during the distractor phase (each eaten one respawns).
const APPLES: usize = 5;
/// Reward for an apple.
const APPLE_REWARD: f64 = 1.0;
/// Reward for reaching the door with the key.
const DOOR_REWARD: f64 = 5.0;
/// Radius of the egocentric view (5 x 5 cells).
const VIEW: i32 = 2;
/// Cell types of the one-hot view.
const CELL_TYPES: usize = 6;
/// Length of the observation: the view plus a one-hot phase indicator.
const OBS_DIM: usize = (2 * VIEW as usize + 1) * (2 * VIEW as usize + 1) * CELL_TYPES + 3;
/// Probability of a random move in the medium behaviour.
const MEDIUM_EPSILON: f64 = 0.6;

/// What a cell holds; the discriminant is its one-hot index (5 is the agent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Wall = 0,
    Floor = 1,
    Key = 2,
    Apple = 3,
    Door = 4,
}

/// The three phases of an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Key = 0,
    Distractor = 1,
    Door = 2,
}

/// Key-to-Door with a distractor phase of `L` steps (`KeyToDoor-L{L}`).
///
/// Rooms are 5 x 5 floors inside walls. Key room (15 steps): stepping on the key
/// picks it up (reward 0). Distractor room (`L` steps): 5 apples worth 1 each, an
/// eaten apple respawns on a random free cell. Door room (10 steps): the door is in
/// the top wall; walking into it ends the episode and pays 5 only with the key.
/// The episode also ends (terminated) when the door phase runs out. Observation: the
/// egocentric 5 x 5 view, each cell one-hot over (wall, floor, key, apple, door,
/// agent), row by row from the north-west, then the one-hot phase (153 floats).
/// Actions: 0 north, 1 south, 2 west, 3 east; walls block. Success: the door
/// reward was obtained.
#[derive(Clone, Debug)]
pub struct KeyToDoor {
    length: usize,
    grid: [[Cell; ROOM]; ROOM],
    agent: (usize, usize),
    phase: Phase,
    phase_steps: usize,
    has_key: bool,
    done: bool,
    rng: ChaCha8Rng,
}

/// The cell one move away: 0 north (y - 1), 1 south, 2 west (x - 1), 3 east.
fn neighbour((x, y): (usize, usize), action: usize) -> (usize, usize) {
    match action {
        0 => (x, y - 1),
        1 => (x, y + 1),
        2 => (x - 1, y),
        _ => (x + 1, y),
    }
}

/// The move that brings `from` one step closer to `to` (horizontal first).
fn towards(from: (usize, usize), to: (usize, usize)) -> usize {
    if to.0 < from.0 {
        2
    } else if to.0 > from.0 {
        3
    } else if to.1 < from.1 {
        0
    } else {
        1
    }
}

impl KeyToDoor {
    /// Key-to-Door with a distractor phase of `length >= 1` steps, reset from a
    /// generator seeded with 0; errors when `length` is 0.
    pub fn new(length: usize) -> Result<Self, EnvError> {
        let mut env = KeyToDoor {
            length: check_length("Key-to-Door", length)?,
            grid: [[Cell::Wall; ROOM]; ROOM],
            agent: (3, 3),
            phase: Phase::Key,
            phase_steps: 0,
            has_key: false,
            done: false,
            rng: rand::SeedableRng::seed_from_u64(0),
        };
        env.reset_native(None);
        Ok(env)
    }

    /// The longest episode: key phase, distractor phase and door phase.
    pub fn horizon(&self) -> usize {
        KEY_STEPS + self.length + DOOR_STEPS
    }

    fn empty_room(&mut self) {
        self.grid = [[Cell::Wall; ROOM]; ROOM];
        for row in &mut self.grid[1..ROOM - 1] {
            for cell in &mut row[1..ROOM - 1] {
                *cell = Cell::Floor;
            }
        }
    }

    /// A random floor cell that is not the agent's.
    fn free_cell(&mut self) -> (usize, usize) {
        loop {
            let cell = (
                self.rng.gen_range(1..ROOM - 1),
                self.rng.gen_range(1..ROOM - 1),
            );
            if cell != self.agent && self.grid[cell.1][cell.0] == Cell::Floor {
                return cell;
            }
        }
    }

    fn place(&mut self, what: Cell) {
        let (x, y) = self.free_cell();
        self.grid[y][x] = what;
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_steps = 0;
        self.empty_room();
        match phase {
            Phase::Key => {
                self.agent = (
                    self.rng.gen_range(1..ROOM - 1),
                    self.rng.gen_range(1..ROOM - 1),
                );
                self.place(Cell::Key);
            }
            Phase::Distractor => {
                self.agent = (ROOM / 2, ROOM / 2);
                for _ in 0..APPLES {
                    self.place(Cell::Apple);
                }
            }
            Phase::Door => {
                self.agent = (
                    self.rng.gen_range(1..ROOM - 1),
                    self.rng.gen_range(1..ROOM - 1),
                );
                let door = self.rng.gen_range(1..ROOM - 1);
                self.grid[0][door] = Cell::Door;
            }
        }
    }

    fn observe(&self) -> Obs {
        let mut obs = vec![0.0; OBS_DIM];
        let (ax, ay) = (self.agent.0 as i32, self.agent.1 as i32);
        let mut offset = 0;
        for dy in -VIEW..=VIEW {
            for dx in -VIEW..=VIEW {
                let (x, y) = (ax + dx, ay + dy);
                let kind = if dx == 0 && dy == 0 {
                    5
                } else if (0..ROOM as i32).contains(&x) && (0..ROOM as i32).contains(&y) {
                    self.grid[y as usize][x as usize] as usize
                } else {
                    Cell::Wall as usize
                };
                obs[offset + kind] = 1.0;
                offset += CELL_TYPES;
            }
        }
        obs[offset + self.phase as usize] = 1.0;
        obs
    }

    /// The nearest cell holding `what` (Manhattan distance, first in row order on ties).
    fn nearest(&self, what: Cell) -> Option<(usize, usize)> {
        let (ax, ay) = self.agent;
        (0..ROOM)
            .flat_map(|y| (0..ROOM).map(move |x| (x, y)))
            .filter(|&(x, y)| self.grid[y][x] == what)
            .min_by_key(|&(x, y)| x.abs_diff(ax) + y.abs_diff(ay))
    }
}

impl FlowEnv for KeyToDoor {
    fn id(&self) -> String {
        format!("KeyToDoor-L{}", self.length)
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = rand::SeedableRng::seed_from_u64(seed);
        }
        self.has_key = false;
        self.done = false;
        self.enter(Phase::Key);
        self.observe()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let action = discrete(|| self.id(), action, 4);
        if self.done {
            return Step {
                obs: self.observe(),
                reward: 0.0,
                terminated: true,
                truncated: false,
                success: Some(false),
            };
        }
        let (x, y) = neighbour(self.agent, action);
        let mut reward = 0.0;
        let mut success = None;
        match self.grid[y][x] {
            Cell::Wall => {}
            Cell::Floor => self.agent = (x, y),
            Cell::Key => {
                self.grid[y][x] = Cell::Floor;
                self.agent = (x, y);
                self.has_key = true;
            }
            Cell::Apple => {
                self.grid[y][x] = Cell::Floor;
                self.agent = (x, y);
                reward = APPLE_REWARD;
                self.place(Cell::Apple);
            }
            Cell::Door => {
                self.done = true;
                success = Some(self.has_key);
                if self.has_key {
                    reward = DOOR_REWARD;
                }
            }
        }
        self.phase_steps += 1;
        if !self.done {
            match self.phase {
                Phase::Key if self.phase_steps == KEY_STEPS => self.enter(Phase::Distractor),
                Phase::Distractor if self.phase_steps == self.length => self.enter(Phase::Door),
                Phase::Door if self.phase_steps == DOOR_STEPS => {
                    self.done = true;
                    success = Some(false);
                }
                _ => {}
            }
        }
        Step {
            obs: self.observe(),
            reward,
            terminated: self.done,
            truncated: false,
            success,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Discrete { n: 4 }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        (vec![0.0; OBS_DIM], vec![1.0; OBS_DIM])
    }

    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.horizon())
    }

    /// The optimal route: to the key, then to the nearest apple, then to the door.
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        let target = match self.phase {
            Phase::Key => self.nearest(Cell::Key),
            Phase::Distractor => self.nearest(Cell::Apple),
            Phase::Door => self.nearest(Cell::Door),
        };
        Action::Discrete(target.map_or(0, |target| towards(self.agent, target)))
    }

    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action {
        degrade(
            self.expert_action(rng),
            self.action_spec(),
            MEDIUM_EPSILON,
            0.0,
            rng,
        )
    }
}

impl_gym_env!(KeyToDoor);
