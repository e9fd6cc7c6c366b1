//! Memory limits: how much the machine can still hold, and estimates of what a model,
//! a training batch or an evaluation will allocate, so that sizes read from a config,
//! a flag or a file are refused with a clear error before anything big is allocated.
//!
//! The estimates are lower bounds of the big buffers (parameters, optimiser state,
//! activations kept for the backward pass), not exact peaks: they exist to turn
//! "memory allocation of N bytes failed" aborts into errors that name the setting.

use std::fmt;

use dfdx::prelude::Cpu;
use flowrl_agents::agent::{Agent, AgentConfig, AgentKind};

/// Environment variable that replaces `MemAvailable` (a number of bytes), e.g. to
/// test the limits or to keep flowrl within a share of a shared machine.
pub const MEMORY_LIMIT_VAR: &str = "FLOWRL_MEMORY_LIMIT";

/// Memory assumed available when neither [`MEMORY_LIMIT_VAR`] nor `/proc/meminfo`
/// says (4 GiB).
pub const FALLBACK_AVAILABLE: u64 = 4 << 30;

/// Most episodes per target one evaluation runs (`eval.episodes`, `--episodes`), and
/// most episodes one collection asks for (`dataset.episodes`).
pub const MAX_EPISODES: usize = 1_000_000;

/// Most transitions one collection asks for (`flowrl collect --transitions`).
pub const MAX_TRANSITIONS: usize = 1_000_000_000;

/// Most windows in one training batch (`train.batch`).
pub const MAX_BATCH: usize = 1 << 20;

/// Memory the process may still allocate, and where that figure comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure comes from (for messages).
    pub source: String,
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is available ({})",
            human(self.bytes as f64),
            self.source
        )
    }
}

/// The memory available: [`MEMORY_LIMIT_VAR`] when set, else `MemAvailable` of
/// `/proc/meminfo`, else [`FALLBACK_AVAILABLE`].
pub fn available() -> Available {
    if let Ok(text) = std::env::var(MEMORY_LIMIT_VAR) {
        if let Ok(bytes) = text.trim().parse::<u64>() {
            return Available {
                bytes,
                source: MEMORY_LIMIT_VAR.to_string(),
            };
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemAvailable:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    });
    match kib {
        Some(kib) => Available {
            bytes: kib.saturating_mul(1024),
            source: "MemAvailable of /proc/meminfo".into(),
        },
        None => Available {
            bytes: FALLBACK_AVAILABLE,
            source: "assumed: /proc/meminfo gives no MemAvailable".into(),
        },
    }
}

/// `bytes` in a readable unit (B, KiB, MiB, GiB, TiB, PiB; larger values in PiB).
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses an estimate above the available memory: `Err` holds "needs about X, but
/// Y is available (source)", to follow what needs it.
pub fn fits(need: f64) -> Result<(), String> {
    let available = available();
    if need > available.bytes as f64 {
        Err(format!("needs about {}, but {available}", human(need)))
    } else {
        Ok(())
    }
}

/// Number of scalar parameters the agent config implies (validated first), counted
/// without allocating them.
pub fn parameters(cfg: &AgentConfig) -> anyhow::Result<usize> {
    Ok(Agent::<f32, Cpu>::plan(&Cpu::default(), cfg)?.planned_elements())
}

/// Bytes of the activations of a forward pass over `rows` windows of `steps` steps
/// (kept for the backward pass when `train`): per token and block about 16 values
/// of the width (norms, projections, attention, the 4x MLP), 3 tokens per step in
/// the sequence models; the MLP holds 4 hidden rows per step.
pub fn activation_bytes(cfg: &AgentConfig, rows: usize, steps: usize, train: bool) -> f64 {
    let width = cfg.width as f64;
    let steps = rows as f64 * steps as f64;
    let per_step = match cfg.kind {
        AgentKind::MlpBc => 4.0 * width,
        AgentKind::DecisionFlowformer | AgentKind::DecisionTransformer => {
            3.0 * width * (16.0 * cfg.layers as f64 + 8.0)
        }
    };
    let factor = if train { 2.0 } else { 1.0 };
    steps * per_step * 4.0 * factor
}

/// Checks that training `cfg` with batches of `batch` windows fits in memory: the
/// parameters with their gradients and both AdamW moments (4 f32 per parameter),
/// plus one batch's activations. The error names the config keys involved.
pub fn check_training(cfg: &AgentConfig, batch: usize) -> anyhow::Result<()> {
    let params = parameters(cfg)?;
    let model = params as f64 * 16.0;
    let acts = activation_bytes(cfg, batch, cfg.context, true);
    fits(model + acts).map_err(|e| {
        anyhow::anyhow!(
            "agent.width = {}, agent.layers = {}, agent.context = {}, agent.max_episode_length \
             = {} and train.batch = {}: training {e} ({} for {params} parameters with their \
             gradients and AdamW moments, {} for one batch's activations)",
            cfg.width,
            cfg.layers,
            cfg.context,
            cfg.max_ep_len,
            batch,
            human(model),
            human(acts)
        )
    })
}

/// Checks that rolling out `rows` episodes in lockstep with the agent of `cfg` (a
/// window of its context per episode) fits in memory; `what` names the setting the
/// row count comes from, e.g. "--episodes 1000 x 2 targets".
pub fn check_rollout(cfg: &AgentConfig, rows: usize, what: &str) -> anyhow::Result<()> {
    let need = activation_bytes(cfg, rows, cfg.context, false);
    fits(need).map_err(|e| {
        anyhow::anyhow!(
            "{what}: {rows} episodes at once with a context of {} steps (agent.context of \
             the checkpoint) {e}",
            cfg.context
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrl_agents::agent::ActionSpace;

    #[test]
    fn human_units() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human((3u64 << 30) as f64), "3.0 GiB");
    }

    #[test]
    fn meminfo_gives_a_positive_figure() {
        assert!(available().bytes > 0);
    }

    /// The planned count equals what building the agent allocates.
    #[test]
    fn planned_parameters_match_the_built_agent() {
        for kind in [
            AgentKind::DecisionFlowformer,
            AgentKind::DecisionTransformer,
            AgentKind::MlpBc,
        ] {
            let cfg = AgentConfig::new(kind, 3, ActionSpace::Discrete { n: 4 });
            let built = Agent::<f32, Cpu>::new(&Cpu::default(), cfg, 0).unwrap();
            assert_eq!(parameters(&cfg).unwrap(), built.params().num_elements());
        }
    }
}
