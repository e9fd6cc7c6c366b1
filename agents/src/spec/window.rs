//! A batch of training or acting windows on the device, built from host slices.

use dfdx::prelude::*;

use crate::device::ModelDevice;

use super::{ActionSpace, AgentConfig, AgentError};
use crate::model::layers::Tensor2;
use crate::params::{from_f64, to_f64};

/// Actions of a host batch, row-major `[B, L, ...]`, with values of type `H`
/// (`f32`, the data layer's type, or `f64`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostActions<'a, H = f32> {
    /// `[B, L, dim]` continuous actions, in the model's `[-1, 1]` scale.
    Continuous(&'a [H]),
    /// `[B, L]` action indices.
    Discrete(&'a [usize]),
}

/// One batch of windows as flat row-major host slices (the data layer's layout),
/// with values of type `H` (`f32` or `f64`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostWindow<'a, H = f32> {
    /// B.
    pub batch: usize,
    /// L: timesteps per window (K in training).
    pub len: usize,
    /// `[B, L, obs_dim]` normalised states.
    pub states: &'a [H],
    /// Actions; padded steps hold any value (0 by convention).
    pub actions: HostActions<'a, H>,
    /// `[B, L]` returns-to-go divided by the reward scale.
    pub returns_to_go: &'a [H],
    /// `[B, L]` timesteps within the episode, each below the config's `max_ep_len`.
    pub timesteps: &'a [usize],
    /// `[B, L]` 1 for real steps, 0 for padding; padding only on the right and every
    /// row starts with a real step.
    pub mask: &'a [H],
}

/// Action inputs on the device.
#[derive(Clone, Debug)]
pub(crate) enum ActionInputs<E: Dtype, D: Storage<E> + Storage<usize>> {
    /// `(B·L, dim)`.
    Continuous(Tensor2<E, D>),
    /// `(B·L,)`.
    Discrete(Tensor<(usize,), usize, D>),
}

/// Loss targets of the valid steps only, in row-major step order.
#[derive(Clone, Debug)]
pub(crate) enum Targets<E: Dtype, D: Storage<E> + Storage<usize>> {
    /// `(valid, dim)`.
    Continuous(Tensor2<E, D>),
    /// `(valid,)`.
    Discrete(Tensor<(usize,), usize, D>),
}

/// A batch of windows on the device: the input of [`crate::agent::Agent::loss`] and
/// [`crate::agent::Agent::predict`]. Padding is on the right; the valid steps of each row are
/// a prefix of length [`Window::lengths`]. Steps are stored flat, `b * L + t`.
#[derive(Clone, Debug)]
pub struct Window<E: Dtype, D: Storage<E> + Storage<usize>> {
    pub(crate) batch: usize,
    pub(crate) len: usize,
    /// `(B·L, obs_dim)`.
    pub(crate) states: Tensor2<E, D>,
    pub(crate) actions: ActionInputs<E, D>,
    /// `(B·L, 1)`.
    pub(crate) returns: Tensor2<E, D>,
    /// `(B·L,)`.
    pub(crate) timesteps: Tensor<(usize,), usize, D>,
    pub(crate) max_timestep: usize,
    /// Largest action index (0 for continuous actions).
    pub(crate) max_action: usize,
    pub(crate) lengths: Vec<usize>,
    /// Flat step indices `b * L + t` of the valid steps.
    pub(crate) valid: Tensor<(usize,), usize, D>,
    /// Flat step indices `b * L + lengths[b] - 1` of each row's last valid step.
    pub(crate) last: Tensor<(usize,), usize, D>,
    pub(crate) targets: Targets<E, D>,
}

pub(crate) fn check_len(
    field: &'static str,
    found: usize,
    want: usize,
    shape: String,
) -> Result<(), AgentError> {
    if found == want {
        Ok(())
    } else {
        Err(AgentError::Window {
            field,
            expected: format!("{want} values ({shape})"),
            found: format!("{found} values"),
        })
    }
}

pub(crate) fn check_finite<H: num_traits::Float + std::fmt::Display>(
    field: &'static str,
    values: &[H],
) -> Result<(), AgentError> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(AgentError::Window {
            field,
            expected: "finite values".into(),
            found: format!("{} at flat index {i}", values[i]),
        }),
    }
}

pub(crate) fn to_device<E: Dtype + num_traits::Float, H: num_traits::Float>(
    values: &[H],
) -> Vec<E> {
    values.iter().map(|&x| from_f64(to_f64(x))).collect()
}

impl<E, D> Window<E, D>
where
    E: Dtype + num_traits::Float,
    D: ModelDevice<E>,
{
    /// Validates a host batch against `cfg` and copies it to `dev`: sizes, finite
    /// values, action indices below `n`, timesteps below `max_ep_len` (sequence models),
    /// a 0/1 mask with padding only on the right and at least one real step per row.
    /// Any window length `L >= 1` is accepted (the context K is the caller's choice).
    pub fn from_host<H>(
        dev: &D,
        cfg: &AgentConfig,
        w: &HostWindow<'_, H>,
    ) -> Result<Self, AgentError>
    where
        H: num_traits::Float + std::fmt::Display,
    {
        let (b, l) = (w.batch, w.len);
        if b == 0 || l == 0 {
            return Err(AgentError::Window {
                field: "batch/len",
                expected: "batch >= 1 and len >= 1".into(),
                found: format!("batch {b}, len {l}"),
            });
        }
        let steps = b * l;
        let obs = cfg.obs_dim;
        check_len(
            "states",
            w.states.len(),
            steps * obs,
            format!("[{b}, {l}, {obs}]"),
        )?;
        check_finite("states", w.states)?;
        check_len(
            "returns_to_go",
            w.returns_to_go.len(),
            steps,
            format!("[{b}, {l}]"),
        )?;
        check_finite("returns_to_go", w.returns_to_go)?;
        check_len("timesteps", w.timesteps.len(), steps, format!("[{b}, {l}]"))?;
        check_len("mask", w.mask.len(), steps, format!("[{b}, {l}]"))?;
        if cfg.kind != super::AgentKind::MlpBc {
            if let Some(i) = w.timesteps.iter().position(|&t| t >= cfg.max_ep_len) {
                return Err(AgentError::Window {
                    field: "timesteps",
                    expected: format!("values below max_ep_len {}", cfg.max_ep_len),
                    found: format!("{} at flat index {i}", w.timesteps[i]),
                });
            }
        }
        let lengths = mask_lengths(w.mask, b, l)?;
        let valid: Vec<usize> = (0..b)
            .flat_map(|r| (0..lengths[r]).map(move |t| r * l + t))
            .collect();
        let last: Vec<usize> = (0..b).map(|r| r * l + lengths[r] - 1).collect();

        let (actions, targets) = match (cfg.action, w.actions) {
            (ActionSpace::Continuous { dim }, HostActions::Continuous(a)) => {
                check_len(
                    "actions",
                    a.len(),
                    steps * dim,
                    format!("[{b}, {l}, {dim}]"),
                )?;
                check_finite("actions", a)?;
                let picked: Vec<E> = valid
                    .iter()
                    .flat_map(|&s| a[s * dim..(s + 1) * dim].iter())
                    .map(|&x| from_f64(to_f64(x)))
                    .collect();
                (
                    ActionInputs::Continuous(dev.tensor_from_vec(to_device(a), (steps, dim))),
                    Targets::Continuous(dev.tensor_from_vec(picked, (valid.len(), dim))),
                )
            }
            (ActionSpace::Discrete { n }, HostActions::Discrete(a)) => {
                check_len("actions", a.len(), steps, format!("[{b}, {l}]"))?;
                if let Some(i) = a.iter().position(|&x| x >= n) {
                    return Err(AgentError::Window {
                        field: "actions",
                        expected: format!("action indices below {n}"),
                        found: format!("{} at flat index {i}", a[i]),
                    });
                }
                let picked: Vec<usize> = valid.iter().map(|&s| a[s]).collect();
                (
                    ActionInputs::Discrete(dev.tensor_from_vec(a.to_vec(), (steps,))),
                    Targets::Discrete(dev.tensor_from_vec(picked, (valid.len(),))),
                )
            }
            (space, given) => {
                return Err(AgentError::Window {
                    field: "actions",
                    expected: format!("{space:?} actions"),
                    found: match given {
                        HostActions::Continuous(_) => "continuous actions".into(),
                        HostActions::Discrete(_) => "discrete action indices".into(),
                    },
                })
            }
        };
        let valid_count = valid.len();
        Ok(Self {
            batch: b,
            len: l,
            states: dev.tensor_from_vec(to_device(w.states), (steps, obs)),
            actions,
            returns: dev.tensor_from_vec(to_device(w.returns_to_go), (steps, 1)),
            timesteps: dev.tensor_from_vec(w.timesteps.to_vec(), (steps,)),
            max_action: match w.actions {
                HostActions::Discrete(a) => a.iter().copied().max().unwrap_or(0),
                HostActions::Continuous(_) => 0,
            },
            max_timestep: w.timesteps.iter().copied().max().unwrap_or(0),
            lengths,
            valid: dev.tensor_from_vec(valid, (valid_count,)),
            last: dev.tensor_from_vec(last, (b,)),
            targets,
        })
    }

    /// Checks that the window fits an agent built from `cfg` (it may have been built
    /// for another one).
    pub(crate) fn check(&self, cfg: &AgentConfig) -> Result<(), AgentError> {
        let obs = self.states.shape().1;
        if obs != cfg.obs_dim {
            return Err(AgentError::Window {
                field: "states",
                expected: format!("obs_dim {}", cfg.obs_dim),
                found: format!("obs_dim {obs}"),
            });
        }
        let fits = match (&self.actions, cfg.action) {
            (ActionInputs::Continuous(a), ActionSpace::Continuous { dim }) => a.shape().1 == dim,
            (ActionInputs::Discrete(_), ActionSpace::Discrete { n }) => self.max_action < n,
            _ => false,
        };
        if !fits {
            return Err(AgentError::Window {
                field: "actions",
                expected: format!("{:?} actions", cfg.action),
                found: "a window built for another action space".into(),
            });
        }
        if cfg.kind != super::AgentKind::MlpBc && self.max_timestep >= cfg.max_ep_len {
            return Err(AgentError::Window {
                field: "timesteps",
                expected: format!("values below max_ep_len {}", cfg.max_ep_len),
                found: self.max_timestep.to_string(),
            });
        }
        Ok(())
    }

    /// Replaces the loss targets (by default the window's own actions, as in
    /// Decision-Transformer training) with other actions of the same layout
    /// (`[B, L, dim]` values or `[B, L]` indices); padded steps are ignored.
    pub fn with_targets<H>(mut self, targets: HostActions<'_, H>) -> Result<Self, AgentError>
    where
        H: num_traits::Float + std::fmt::Display,
    {
        let (b, l) = (self.batch, self.len);
        let valid: Vec<usize> = (0..b)
            .flat_map(|r| (0..self.lengths[r]).map(move |t| r * l + t))
            .collect();
        let dev = self.states.device().clone();
        self.targets = match (&self.actions, targets) {
            (ActionInputs::Continuous(a), HostActions::Continuous(t)) => {
                let dim = a.shape().1;
                check_len(
                    "targets",
                    t.len(),
                    b * l * dim,
                    format!("[{b}, {l}, {dim}]"),
                )?;
                check_finite("targets", t)?;
                let picked: Vec<E> = valid
                    .iter()
                    .flat_map(|&s| t[s * dim..(s + 1) * dim].iter())
                    .map(|&x| from_f64(to_f64(x)))
                    .collect();
                Targets::Continuous(dev.tensor_from_vec(picked, (valid.len(), dim)))
            }
            (ActionInputs::Discrete(_), HostActions::Discrete(t)) => {
                check_len("targets", t.len(), b * l, format!("[{b}, {l}]"))?;
                let picked: Vec<usize> = valid.iter().map(|&s| t[s]).collect();
                if let Some(&i) = picked.iter().find(|&&i| i > self.max_action) {
                    self.max_action = i;
                }
                Targets::Discrete(dev.tensor_from_vec(picked, (valid.len(),)))
            }
            _ => {
                return Err(AgentError::Window {
                    field: "targets",
                    expected: "targets of the same kind as the window's actions".into(),
                    found: "the other kind".into(),
                })
            }
        };
        Ok(self)
    }

    /// B.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// L (timesteps per row, padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window has no timesteps (never true for a constructed window).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of real steps of each row (the mask's prefix of ones).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Number of real steps in the batch: the positions a loss averages over.
    pub fn valid_steps(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Flat step indices `b * L + t` of the real steps, in order (the host copy of
    /// `valid`).
    pub(crate) fn valid_indices(&self) -> Vec<usize> {
        (self.lengths.iter().enumerate())
            .flat_map(|(row, &n)| (0..n).map(move |t| row * self.len + t))
            .collect()
    }

    /// Flat step index of each row's last real step (the host copy of `last`).
    pub(crate) fn last_indices(&self) -> Vec<usize> {
        (self.lengths.iter().enumerate())
            .map(|(row, &n)| row * self.len + n - 1)
            .collect()
    }
}

/// The length of each row's prefix of ones; rejects other values, holes and empty rows.
fn mask_lengths<H>(mask: &[H], b: usize, l: usize) -> Result<Vec<usize>, AgentError>
where
    H: num_traits::Float + std::fmt::Display,
{
    (0..b)
        .map(|r| {
            let row = &mask[r * l..(r + 1) * l];
            if let Some(t) = row.iter().position(|&m| m != H::zero() && m != H::one()) {
                return Err(AgentError::Window {
                    field: "mask",
                    expected: "values 0 or 1".into(),
                    found: format!("{} at row {r}, step {t}", row[t]),
                });
            }
            let len = row.iter().position(|&m| m == H::zero()).unwrap_or(l);
            if len == 0 {
                return Err(AgentError::Window {
                    field: "mask",
                    expected: "every row to start with a real step (mask 1)".into(),
                    found: format!("row {r} starts with padding"),
                });
            }
            if let Some(t) = row[len..].iter().position(|&m| m == H::one()) {
                return Err(AgentError::Window {
                    field: "mask",
                    expected: "padding (0) only on the right".into(),
                    found: format!("a real step at row {r}, step {} after padding", len + t),
                });
            }
            Ok(len)
        })
        .collect()
}
