//! AdamW with decoupled weight decay, and gradient-norm clipping.
//!
//! [`AdamW`] follows PyTorch's `torch.optim.AdamW` (single-tensor path) step for step:
//!
//! ```text
//! t += 1
//! p  *= 1 - lr * wd
//! m   = lerp(m, g, 1 - beta1)
//! v   = v * beta2 + g^2 * (1 - beta2)
//! p  -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! Weight decay applies to every parameter (as in the original Decision Transformer).
//! The learning rate is read at every step (`cfg.lr` or [`AdamW::set_lr`]), so warm-up
//! schedules live in the caller. Updates are in place on the device (the parameters
//! keep their ids) and use only stock dfdx ops, so they run on every device.
//! The state (step count and both moments) round-trips through safetensors bytes, so a
//! resumed run continues bit for bit.

use dfdx::prelude::*;

use crate::params::{
    decode, encode, from_f64, to_f64, Metadata, ParamError, ParamGrads, ParamStore,
};

/// PyTorch's `eps` in `clip_grad_norm_`'s coefficient `max_norm / (norm + eps)`.
const CLIP_EPS: f64 = 1e-6;

/// AdamW hyperparameters (defaults are PyTorch's).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: [f64; 2],
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay coefficient.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// Checks every constant's range, naming the first bad field.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |field: &'static str, expected: &'static str, found: f64| {
            Err(OptimError::Config {
                field,
                expected,
                found,
            })
        };
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", "finite and >= 0", self.lr);
        }
        for (field, b) in [("betas[0]", self.betas[0]), ("betas[1]", self.betas[1])] {
            if !(0.0..1.0).contains(&b) {
                return bad(field, "in [0, 1)", b);
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", "finite and >= 0", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "finite and >= 0", self.weight_decay);
        }
        Ok(())
    }
}

/// Errors of the optimiser and of gradient clipping.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptimError {
    /// A hyperparameter out of range.
    #[error("AdamW config: `{field}` must be {expected}, found {found}")]
    Config {
        /// The field.
        field: &'static str,
        /// The valid range.
        expected: &'static str,
        /// The value given.
        found: f64,
    },
    /// Gradients or state built for a different store.
    #[error("{what}: expected {expected} tensors (one per parameter), found {found}")]
    Count {
        /// Which collection.
        what: &'static str,
        /// The store's parameter count.
        expected: usize,
        /// The collection's length.
        found: usize,
    },
    /// The global gradient norm is NaN or infinite.
    #[error("the global gradient norm is not finite ({norm}): refusing to clip")]
    NonFiniteGradNorm {
        /// The norm found.
        norm: f64,
    },
    /// `max_norm` of clipping is not a positive finite number.
    #[error("max_norm must be finite and > 0, found {0}")]
    MaxNorm(f64),
    /// Encoding or decoding the optimiser state.
    #[error("AdamW state: {0}")]
    State(#[from] ParamError),
}

/// AdamW state for one [`ParamStore`]: the step count and both moments per parameter.
pub struct AdamW<E: Dtype, D: Storage<E>> {
    /// Hyperparameters, read at every step.
    pub cfg: AdamWConfig,
    step: u64,
    exp_avg: Vec<Tensor<(usize,), E, D>>,
    exp_avg_sq: Vec<Tensor<(usize,), E, D>>,
}

impl<E, D> AdamW<E, D>
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    /// Fresh state (step 0, zero moments) for every parameter of `store`.
    pub fn new(store: &ParamStore<E, D>, cfg: AdamWConfig) -> Result<Self, OptimError> {
        cfg.validate()?;
        let zeros = || -> Vec<Tensor<(usize,), E, D>> {
            store
                .ids()
                .map(|id| store.device().zeros_like(store.value(id).shape()))
                .collect()
        };
        Ok(Self {
            cfg,
            step: 0,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
        })
    }

    /// Sets the learning rate used by the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Number of updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One AdamW update of every parameter of `store` with `grads`.
    pub fn update(
        &mut self,
        store: &mut ParamStore<E, D>,
        grads: &ParamGrads<E, D>,
    ) -> Result<(), OptimError> {
        self.cfg.validate()?;
        self.check_count(store)?;
        if grads.len() != store.len() {
            return Err(OptimError::Count {
                what: "gradients",
                expected: store.len(),
                found: grads.len(),
            });
        }
        self.step += 1;
        let AdamWConfig {
            lr,
            betas: [beta1, beta2],
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        let decay = 1.0 - lr * weight_decay;
        let ids: Vec<_> = store.ids().collect();
        for (((id, g), m), v) in ids
            .into_iter()
            .zip(grads.iter())
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            lerp(m, g, 1.0 - beta1);
            v.axpy(beta2, &g.clone().square(), 1.0 - beta2);
            let denom =
                (v.clone().sqrt() / from_f64::<E>(bias_correction2_sqrt)) + from_f64::<E>(eps);
            let direction = m.clone() / denom;
            store.value_mut(id).axpy(decay, &direction, -step_size);
        }
        Ok(())
    }

    fn check_count(&self, store: &ParamStore<E, D>) -> Result<(), OptimError> {
        if self.exp_avg.len() != store.len() {
            return Err(OptimError::Count {
                what: "AdamW moments",
                expected: store.len(),
                found: self.exp_avg.len(),
            });
        }
        Ok(())
    }

    /// The state as safetensors bytes: `exp_avg.{name}` and `exp_avg_sq.{name}` per
    /// parameter, the step count in the metadata (`step`).
    pub fn state_to_safetensors(&self, store: &ParamStore<E, D>) -> Result<Vec<u8>, OptimError> {
        self.check_count(store)?;
        let names = state_names(store);
        let mut entries = Vec::with_capacity(2 * store.len());
        let moments = self.exp_avg.iter().zip(&self.exp_avg_sq);
        for ((id, (avg, avg_sq)), (m, v)) in store.ids().zip(&names).zip(moments) {
            entries.push((avg.as_str(), store.shape(id), m.as_vec()));
            entries.push((avg_sq.as_str(), store.shape(id), v.as_vec()));
        }
        let metadata = Metadata::from([("step".to_string(), self.step.to_string())]);
        Ok(encode(&entries, &metadata)?)
    }

    /// Restores the state written by [`AdamW::state_to_safetensors`] for the same store.
    /// On any error the state is left unchanged.
    pub fn load_state_safetensors(
        &mut self,
        store: &ParamStore<E, D>,
        bytes: &[u8],
    ) -> Result<(), OptimError> {
        let names = state_names(store);
        let expected: Vec<(&str, &[usize])> = store
            .ids()
            .zip(&names)
            .flat_map(|(id, (avg, avg_sq))| {
                [
                    (avg.as_str(), store.shape(id)),
                    (avg_sq.as_str(), store.shape(id)),
                ]
            })
            .collect();
        let (values, metadata) = decode::<E>(bytes, &expected)?;
        let step = match metadata.get("step") {
            Some(s) => s.parse::<u64>().map_err(|_| {
                ParamError::Format(format!("metadata `step`: expected an integer, found `{s}`"))
            })?,
            None => return Err(ParamError::Format("metadata `step` is missing".into()).into()),
        };
        let dev = store.device();
        let mut tensors = values.into_iter().map(|v| {
            let n = v.len();
            dev.tensor_from_vec(v, (n,))
        });
        let mut exp_avg = Vec::with_capacity(store.len());
        let mut exp_avg_sq = Vec::with_capacity(store.len());
        while let (Some(m), Some(v)) = (tensors.next(), tensors.next()) {
            exp_avg.push(m);
            exp_avg_sq.push(v);
        }
        self.step = step;
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        Ok(())
    }
}

fn state_names<E, D>(store: &ParamStore<E, D>) -> Vec<(String, String)>
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    store
        .ids()
        .map(|id| {
            let name = store.name(id);
            (format!("exp_avg.{name}"), format!("exp_avg_sq.{name}"))
        })
        .collect()
}

/// `m = lerp(m, g, w)` with PyTorch's formula: `m + w (g - m)` if `w < 0.5`,
/// else `g - (g - m)(1 - w)`.
fn lerp<E, D>(m: &mut Tensor<(usize,), E, D>, g: &Tensor<(usize,), E, D>, w: f64)
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    let diff = g.clone() - m.clone();
    if w < 0.5 {
        m.axpy(1.0, &diff, w);
    } else {
        let mut out = g.clone();
        out.axpy(1.0, &diff, -(1.0 - w));
        *m = out;
    }
}

/// The global L2 norm of all gradients: the norm of the per-parameter norms, as
/// PyTorch's `clip_grad_norm_` computes it.
pub fn grad_norm<E, D>(grads: &ParamGrads<E, D>) -> f64
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    grads
        .iter()
        .map(|g| {
            let sum_sq = g.clone().square().sum::<Rank0, _>().as_vec()[0];
            let norm = to_f64(sum_sq.sqrt());
            norm * norm
        })
        .sum::<f64>()
        .sqrt()
}

/// Clips gradients by their global norm as PyTorch's `clip_grad_norm_`: with
/// `coef = max_norm / (norm + 1e-6)`, every gradient is multiplied by `coef` when
/// `coef < 1`. Returns the norm before clipping; a non-finite norm is an error.
pub fn clip_grad_norm<E, D>(grads: &mut ParamGrads<E, D>, max_norm: f64) -> Result<f64, OptimError>
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(OptimError::MaxNorm(max_norm));
    }
    let norm = grad_norm(grads);
    if !norm.is_finite() {
        return Err(OptimError::NonFiniteGradNorm { norm });
    }
    let coef = max_norm / (norm + CLIP_EPS);
    if coef < 1.0 {
        let coef = from_f64::<E>(coef);
        for g in grads.iter_mut() {
            *g = g.clone() * coef;
        }
    }
    Ok(norm)
}
