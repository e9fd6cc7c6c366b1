//! The learning-rate schedule: linear warm-up to the peak rate, then constant, as the
//! original Decision Transformer (`LambdaLR(lambda s: min((s + 1) / warmup, 1))`).

/// Learning rate of the update with 0-based index `update` (the first update is 0):
/// `peak * min((update + 1) / warmup_steps, 1)`; `peak` throughout when `warmup_steps`
/// is 0.
pub fn warmup_lr(update: u64, peak: f64, warmup_steps: u64) -> f64 {
    if warmup_steps == 0 {
        return peak;
    }
    let ramp = (update as f64 + 1.0) / warmup_steps as f64;
    peak * ramp.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_then_holds() {
        assert_eq!(warmup_lr(0, 1e-4, 10), 1e-5);
        assert!((warmup_lr(4, 1e-4, 10) - 5e-5).abs() < 1e-18);
        assert_eq!(warmup_lr(9, 1e-4, 10), 1e-4);
        assert_eq!(warmup_lr(10_000, 1e-4, 10), 1e-4);
        assert_eq!(warmup_lr(0, 3e-4, 0), 3e-4);
    }
}
