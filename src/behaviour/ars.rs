//! The ARS V2-t update step (Mania, Guy and Recht 2018, Algorithm 1).

use anyhow::bail;

/// The training returns of the two rollouts of one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DirectionReturns {
    /// Return of `M + nu delta`.
    pub plus: f64,
    /// Return of `M - nu delta`.
    pub minus: f64,
}

/// What one update did.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateStats {
    /// The directions kept, best first (ties keep the lower index first).
    pub selected: Vec<usize>,
    /// sigma_R: population standard deviation of the `2b` returns kept. When it is 0
    /// (every kept return equal, so every difference is 0) the weights are unchanged.
    pub reward_std: f64,
}

/// One ARS V2-t step on `weights` (any shape, flattened): `deltas` holds the
/// `returns.len()` directions one after the other (each of `weights.len()` values);
/// keeps the `top` directions with the largest `max(plus, minus)` and adds
/// `step_size / (top * sigma_R) * sum_k (plus_k - minus_k) delta_k`, the sum taken over
/// the kept directions in their ranking order. The noise scale does not enter the step.
pub fn ars_update(
    weights: &mut [f64],
    deltas: &[f64],
    returns: &[DirectionReturns],
    top: usize,
    step_size: f64,
) -> anyhow::Result<UpdateStats> {
    let n = returns.len();
    if deltas.len() != n * weights.len() {
        bail!(
            "ARS update: expected {n} directions of {} values ({} values), found {}",
            weights.len(),
            n * weights.len(),
            deltas.len()
        );
    }
    if top == 0 || top > n {
        bail!("ARS update: expected top in 1..={n}, found {top}");
    }
    if let Some(k) = returns
        .iter()
        .position(|r| !(r.plus.is_finite() && r.minus.is_finite()))
    {
        bail!(
            "ARS update: direction {k} has returns {:?}; expected finite returns",
            returns[k]
        );
    }
    let mut order: Vec<usize> = (0..n).collect();
    let best = |k: usize| returns[k].plus.max(returns[k].minus);
    order.sort_by(|&a, &b| best(b).total_cmp(&best(a)));
    order.truncate(top);
    let kept: Vec<f64> = order
        .iter()
        .flat_map(|&k| [returns[k].plus, returns[k].minus])
        .collect();
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let reward_std =
        (kept.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / kept.len() as f64).sqrt();
    if reward_std > 0.0 {
        let dim = weights.len();
        let mut step = vec![0.0; dim];
        for &k in &order {
            let diff = returns[k].plus - returns[k].minus;
            for (s, d) in step.iter_mut().zip(&deltas[k * dim..(k + 1) * dim]) {
                *s += diff * d;
            }
        }
        let scale = step_size / (top as f64 * reward_std);
        for (w, s) in weights.iter_mut().zip(&step) {
            *w += scale * s;
        }
    }
    Ok(UpdateStats {
        selected: order,
        reward_std,
    })
}
