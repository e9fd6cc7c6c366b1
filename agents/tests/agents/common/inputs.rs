//! Agent configs and host-memory window batches for the agent tests: small configs
//! of both action spaces, owned window buffers, and random padded batches.

use flowrl_agents::agent::{ActionSpace, AgentConfig, AgentKind, HostActions, HostWindow};
use rand::Rng;

pub const CONTINUOUS: ActionSpace = ActionSpace::Continuous { dim: 2 };
pub const DISCRETE: ActionSpace = ActionSpace::Discrete { n: 3 };

/// An agent config with obs 3, no dropout, context `k`, `width`, `heads`, 2 layers.
pub fn agent_config(
    kind: AgentKind,
    action: ActionSpace,
    (width, heads, k): (usize, usize, usize),
) -> AgentConfig {
    AgentConfig {
        width,
        layers: 2,
        heads,
        dropout: 0.0,
        context: k,
        max_ep_len: 300,
        ..AgentConfig::new(kind, 3, action)
    }
}

/// A small agent config: obs 3, width 16, 2 layers, 2 heads, K 6, no dropout.
pub fn small(kind: AgentKind, action: ActionSpace) -> AgentConfig {
    agent_config(kind, action, (16, 2, 6))
}

/// Owned host buffers of a window batch.
#[derive(Clone, Debug)]
pub struct HostInputs<H = f32> {
    pub batch: usize,
    pub len: usize,
    pub states: Vec<H>,
    pub actions: Vec<H>,
    pub indices: Vec<usize>,
    pub returns: Vec<H>,
    pub timesteps: Vec<usize>,
    pub mask: Vec<H>,
}

impl<H> HostInputs<H> {
    /// The window batch borrowing these buffers.
    pub fn host(&self) -> HostWindow<'_, H> {
        HostWindow {
            batch: self.batch,
            len: self.len,
            states: &self.states,
            actions: if self.indices.is_empty() {
                HostActions::Continuous(&self.actions)
            } else {
                HostActions::Discrete(&self.indices)
            },
            returns_to_go: &self.returns,
            timesteps: &self.timesteps,
            mask: &self.mask,
        }
    }
}

/// Random inputs of `lengths.len()` rows of `len` steps; row `r` has `lengths[r]`
/// real steps (padding holds zeros). Timesteps start at a random episode step.
pub fn random_inputs<R: Rng>(
    rng: &mut R,
    cfg: &AgentConfig,
    len: usize,
    lengths: &[usize],
) -> HostInputs {
    let b = lengths.len();
    let obs = cfg.obs_dim;
    let mut x = HostInputs {
        batch: b,
        len,
        states: vec![0.0; b * len * obs],
        actions: Vec::new(),
        indices: Vec::new(),
        returns: vec![0.0; b * len],
        timesteps: vec![0; b * len],
        mask: vec![0.0; b * len],
    };
    match cfg.action {
        ActionSpace::Continuous { dim } => x.actions = vec![0.0; b * len * dim],
        ActionSpace::Discrete { .. } => x.indices = vec![0; b * len],
    }
    for (r, &n) in lengths.iter().enumerate() {
        let start = rng.gen_range(0..cfg.max_ep_len - len);
        for t in 0..n {
            let s = r * len + t;
            fill_step(rng, cfg, &mut x, s);
            x.timesteps[s] = start + t;
            x.mask[s] = 1.0;
        }
    }
    x
}

/// Random state, action and return at flat step `s`.
pub fn fill_step<R: Rng>(rng: &mut R, cfg: &AgentConfig, x: &mut HostInputs, s: usize) {
    let obs = cfg.obs_dim;
    for v in &mut x.states[s * obs..(s + 1) * obs] {
        *v = rng.gen_range(-2.0..2.0);
    }
    match cfg.action {
        ActionSpace::Continuous { dim } => {
            for v in &mut x.actions[s * dim..(s + 1) * dim] {
                *v = rng.gen_range(-1.0..1.0);
            }
        }
        ActionSpace::Discrete { n } => x.indices[s] = rng.gen_range(0..n),
    }
    x.returns[s] = rng.gen_range(0.0..3.0);
}
