//! Hopper, HalfCheetah and Walker2d (v5 and v4) as Gymnasium 1.4 computes them.

use rand_chacha::ChaCha8Rng;

use super::simulation::Simulation;
use crate::flow_env::impl_gym_env;
use crate::numpy_rng::Generator;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

/// Gymnasium's time limit of every locomotion task.
pub const LOCOMOTION_STEPS: usize = 1000;

/// The robot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Robot {
    /// One-legged hopper: 6 joints, 3 actuators.
    Hopper,
    /// Planar cheetah: 9 joints, 6 actuators; never falls.
    HalfCheetah,
    /// Planar biped: 9 joints, 6 actuators.
    Walker2d,
}

/// The task version: v5 is Gymnasium's current one; v4 has D4RL-era reward terms
/// (the survival reward is paid on the falling step too) and info keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `-v4`.
    V4,
    /// `-v5`.
    V5,
}

/// A locomotion task: robot, version and Gymnasium's `terminate_when_unhealthy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocomotionSpec {
    /// The robot.
    pub robot: Robot,
    /// The version.
    pub version: Version,
    /// End the episode when the robot falls (Gymnasium's default, true).
    pub terminate_when_unhealthy: bool,
}

impl LocomotionSpec {
    /// The task of a registry id (`Hopper-v5`, `Walker2d-v4`, ...), `None` for others.
    pub fn from_id(id: &str) -> Option<Self> {
        let (name, version) = id.rsplit_once('-')?;
        let robot = match name {
            "Hopper" => Robot::Hopper,
            "HalfCheetah" => Robot::HalfCheetah,
            "Walker2d" => Robot::Walker2d,
            _ => return None,
        };
        let version = match version {
            "v4" => Version::V4,
            "v5" => Version::V5,
            _ => return None,
        };
        Some(LocomotionSpec {
            robot,
            version,
            terminate_when_unhealthy: true,
        })
    }

    /// The registry id.
    pub fn id(&self) -> String {
        let name = match self.robot {
            Robot::Hopper => "Hopper",
            Robot::HalfCheetah => "HalfCheetah",
            Robot::Walker2d => "Walker2d",
        };
        let version = match self.version {
            Version::V4 => "v4",
            Version::V5 => "v5",
        };
        format!("{name}-{version}")
    }

    fn model_file(&self) -> &'static str {
        match (self.robot, self.version) {
            (Robot::Hopper, _) => "hopper.xml",
            (Robot::HalfCheetah, _) => "half_cheetah.xml",
            (Robot::Walker2d, Version::V5) => "walker2d_v5.xml",
            (Robot::Walker2d, Version::V4) => "walker2d.xml",
        }
    }

    /// MuJoCo steps per environment step.
    fn frame_skip(&self) -> usize {
        match self.robot {
            Robot::HalfCheetah => 5,
            Robot::Hopper | Robot::Walker2d => 4,
        }
    }

    /// The environment step in seconds: the model's timestep times the frame skip.
    fn dt(&self) -> f64 {
        match self.robot {
            Robot::HalfCheetah => 0.01 * 5.0,
            Robot::Hopper | Robot::Walker2d => 0.002 * 4.0,
        }
    }

    /// The control cost weight.
    fn ctrl_cost_weight(&self) -> f32 {
        match self.robot {
            Robot::HalfCheetah => 0.1,
            Robot::Hopper | Robot::Walker2d => 0.001,
        }
    }

    /// The scale of the reset noise.
    fn reset_noise_scale(&self) -> f64 {
        match self.robot {
            Robot::HalfCheetah => 0.1,
            Robot::Hopper | Robot::Walker2d => 5e-3,
        }
    }

    /// Whether the observation's velocities are clipped to [-10, 10].
    fn clips_velocities(&self) -> bool {
        self.robot != Robot::HalfCheetah
    }
}

/// The values Gymnasium returns in a step's `info` (widened to f64; `reward_ctrl`
/// is float32 in Gymnasium and exact in f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocomotionInfo {
    /// `qpos[0]` after the step.
    pub x_position: f64,
    /// `qpos[1]` minus its initial value (Hopper and Walker2d).
    pub z_distance_from_origin: f64,
    /// Forward velocity over the step.
    pub x_velocity: f64,
    /// The forward reward term.
    pub reward_forward: f64,
    /// Minus the control cost (a float32 value).
    pub reward_ctrl: f32,
    /// The survival reward term (Hopper and Walker2d).
    pub reward_survive: f64,
}

/// One locomotion environment: its own MuJoCo model and data, and its own numpy
/// generator for the reset noise (seeded as Gymnasium's `np_random(seed)`).
pub struct Locomotion {
    spec: LocomotionSpec,
    sim: Simulation,
    init_qpos: Vec<f64>,
    init_qvel: Vec<f64>,
    rng: Generator,
    qpos: Vec<f64>,
    qvel: Vec<f64>,
    ctrl: Vec<f64>,
    info: Option<LocomotionInfo>,
}

impl Locomotion {
    /// The task `spec` in a reset state drawn from a generator seeded with 0.
    pub fn new(spec: LocomotionSpec) -> Result<Self, EnvError> {
        let mut sim = Simulation::load(spec.model_file())?;
        sim.reset();
        let (qpos, qvel) = sim.positions_velocities();
        let (init_qpos, init_qvel) = (qpos.to_vec(), qvel.to_vec());
        let mut env = Locomotion {
            spec,
            ctrl: vec![0.0; sim.nu],
            qpos: init_qpos.clone(),
            qvel: init_qvel.clone(),
            sim,
            init_qpos,
            init_qvel,
            rng: Generator::seeded(0),
            info: None,
        };
        env.reset_native(Some(0));
        Ok(env)
    }

    /// The task.
    pub fn spec(&self) -> LocomotionSpec {
        self.spec
    }

    /// The joint positions `qpos`.
    pub fn qpos(&self) -> &[f64] {
        &self.qpos
    }

    /// The joint velocities `qvel`.
    pub fn qvel(&self) -> &[f64] {
        &self.qvel
    }

    /// The observation in Gymnasium's float64 (the [`Obs`] is this rounded to f32).
    pub fn observation_f64(&self) -> Vec<f64> {
        let clip = self.spec.clips_velocities();
        self.qpos[1..]
            .iter()
            .copied()
            .chain(
                self.qvel
                    .iter()
                    .map(|&v| if clip { np_clip(v, 10.0) } else { v }),
            )
            .collect()
    }

    /// The info of the last step, `None` after a reset.
    pub fn info(&self) -> Option<LocomotionInfo> {
        self.info
    }

    /// The info keys Gymnasium returns for this task after a step, with their values
    /// (the keys of a reset's info are a prefix: see [`Locomotion::reset_info`]).
    pub fn info_entries(&self) -> Vec<(&'static str, f64)> {
        let Some(info) = self.info else {
            return Vec::new();
        };
        let ctrl = f64::from(info.reward_ctrl);
        match (self.spec.robot, self.spec.version) {
            (Robot::HalfCheetah, Version::V5) => vec![
                ("x_position", info.x_position),
                ("x_velocity", info.x_velocity),
                ("reward_forward", info.reward_forward),
                ("reward_ctrl", ctrl),
            ],
            (Robot::HalfCheetah, Version::V4) => vec![
                ("x_position", info.x_position),
                ("x_velocity", info.x_velocity),
                ("reward_run", info.reward_forward),
                ("reward_ctrl", ctrl),
            ],
            (_, Version::V5) => vec![
                ("x_position", info.x_position),
                ("z_distance_from_origin", info.z_distance_from_origin),
                ("x_velocity", info.x_velocity),
                ("reward_forward", info.reward_forward),
                ("reward_ctrl", ctrl),
                ("reward_survive", info.reward_survive),
            ],
            (_, Version::V4) => vec![
                ("x_position", info.x_position),
                ("x_velocity", info.x_velocity),
            ],
        }
    }

    /// The info Gymnasium returns from `reset`.
    pub fn reset_info(&self) -> Vec<(&'static str, f64)> {
        let x_position = self.qpos[0];
        match (self.spec.robot, self.spec.version) {
            (_, Version::V4) => Vec::new(),
            (Robot::HalfCheetah, Version::V5) => vec![("x_position", x_position)],
            (_, Version::V5) => vec![
                ("x_position", x_position),
                ("z_distance_from_origin", self.qpos[1] - self.init_qpos[1]),
            ],
        }
    }

    /// Whether the robot is in its healthy range (always for HalfCheetah).
    fn is_healthy(&self) -> bool {
        let (z, angle) = (self.qpos[1], self.qpos[2]);
        match self.spec.robot {
            Robot::HalfCheetah => true,
            Robot::Hopper => {
                let state_ok = self.qpos[2..]
                    .iter()
                    .chain(&self.qvel)
                    .all(|&s| -100.0 < s && s < 100.0);
                state_ok && 0.7 < z && z < f64::INFINITY && -0.2 < angle && angle < 0.2
            }
            Robot::Walker2d => 0.8 < z && z < 2.0 && -1.0 < angle && angle < 1.0,
        }
    }

    fn read_state(&mut self) {
        let (qpos, qvel) = self.sim.positions_velocities();
        self.qpos.copy_from_slice(qpos);
        self.qvel.copy_from_slice(qvel);
    }

    fn obs(&self) -> Obs {
        self.observation_f64().iter().map(|&x| x as f32).collect()
    }
}

/// numpy's `clip(v, -bound, bound)` (NaN stays NaN).
fn np_clip(v: f64, bound: f64) -> f64 {
    if v < -bound {
        -bound
    } else if v > bound {
        bound
    } else {
        v
    }
}

/// numpy 2's float32 control cost: `f32(weight) * sum(square(a))`, every square,
/// partial sum (left to right) and the product rounded to float32.
fn control_cost(weight: f32, action: &[f32]) -> f32 {
    weight * action.iter().fold(0.0f32, |sum, &a| sum + a * a)
}

impl FlowEnv for Locomotion {
    fn id(&self) -> String {
        self.spec.id()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = Generator::seeded(seed);
        }
        let scale = self.spec.reset_noise_scale();
        self.sim.reset();
        for (q, init) in self.qpos.iter_mut().zip(&self.init_qpos) {
            *q = init + self.rng.uniform(-scale, scale);
        }
        for (v, init) in self.qvel.iter_mut().zip(&self.init_qvel) {
            *v = match self.spec.robot {
                Robot::HalfCheetah => init + scale * self.rng.standard_normal(),
                Robot::Hopper | Robot::Walker2d => init + self.rng.uniform(-scale, scale),
            };
        }
        self.sim.set_positions_velocities(&self.qpos, &self.qvel);
        self.read_state();
        self.info = None;
        self.obs()
    }

    /// Steps with the action as MuJoCo controls (MuJoCo clamps them to the control
    /// range; the control cost uses the action as given, like Gymnasium).
    fn step_native(&mut self, action: &Action) -> Step {
        let a = match action {
            Action::Continuous(v) if v.len() == self.sim.nu => v,
            _ => panic!(
                "{}: expected a continuous action of {} values, found {action}; use try_step for an error",
                self.id(),
                self.sim.nu
            ),
        };
        for (c, &x) in self.ctrl.iter_mut().zip(a) {
            *c = f64::from(x);
        }
        let x_before = self.qpos[0];
        self.sim.simulate(&self.ctrl, self.spec.frame_skip());
        self.read_state();
        let x_position = self.qpos[0];
        let x_velocity = (x_position - x_before) / self.spec.dt();
        let reward_forward = 1.0 * x_velocity;
        let ctrl_cost = control_cost(self.spec.ctrl_cost_weight(), a);
        let healthy = self.is_healthy();
        let terminated = !healthy && self.spec.terminate_when_unhealthy;
        let reward_survive = match self.spec.version {
            Version::V5 => f64::from(u8::from(healthy)),
            Version::V4 => f64::from(u8::from(healthy || self.spec.terminate_when_unhealthy)),
        };
        let reward = match self.spec.robot {
            Robot::HalfCheetah => reward_forward - f64::from(ctrl_cost),
            Robot::Hopper | Robot::Walker2d => {
                (reward_forward + reward_survive) - f64::from(ctrl_cost)
            }
        };
        self.info = Some(LocomotionInfo {
            x_position,
            z_distance_from_origin: self.qpos[1] - self.init_qpos[1],
            x_velocity,
            reward_forward,
            reward_ctrl: -ctrl_cost,
            reward_survive,
        });
        Step {
            obs: self.obs(),
            reward,
            terminated,
            truncated: false,
            success: None,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Continuous {
            dim: self.sim.nu,
            low: -1.0,
            high: 1.0,
        }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        let dim = self.sim.nq - 1 + self.sim.nv;
        (vec![f32::NEG_INFINITY; dim], vec![f32::INFINITY; dim])
    }

    fn obs_dim(&self) -> usize {
        self.sim.nq - 1 + self.sim.nv
    }

    fn max_episode_steps(&self) -> Option<usize> {
        None
    }

    /// No scripted expert: the zero action ([`FlowEnv::scripted_behaviour`] is false,
    /// and collection refuses the scripted tiers).
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        Action::Continuous(vec![0.0; self.sim.nu])
    }

    /// No scripted medium behaviour: the zero action, as [`Locomotion::expert_action`].
    fn medium_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        Action::Continuous(vec![0.0; self.sim.nu])
    }

    fn scripted_behaviour(&self) -> bool {
        false
    }

    fn steps_in_parallel(&self) -> bool {
        true
    }

    fn info(&self) -> Vec<(&'static str, f64)> {
        self.info_entries()
    }
}

impl_gym_env!(Locomotion);
