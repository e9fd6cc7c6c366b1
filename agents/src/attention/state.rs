//! Step-by-step causal Flow-Attention: a fixed-size state per batch, O(1) per token.

use super::{composed, FlowConfig, ModelDevice, Tensor3, Tensor4};
use dfdx::prelude::*;
use num_traits::Float;

/// The running sums of causal Flow-Attention after some positions, per batch row and head:
/// everything the next token's output depends on.
#[derive(Clone, Debug)]
pub struct FlowSums<E: Dtype, D: Storage<E>> {
    /// `sum_j K_j`, `(B,H,D)`.
    pub key: Tensor3<E, D>,
    /// `sum_j Q_j`, `(B,H,D)`.
    pub query: Tensor3<E, D>,
    /// `sum_j K_j O_j` (keys weighted by outgoing flow), `(B,H,D)`.
    pub key_out: Tensor3<E, D>,
    /// `sum_j Q_j I_j` (queries weighted by incoming flow), `(B,H,D)`.
    pub query_in: Tensor3<E, D>,
    /// `sum_j exp(Sr_j)` (competition normaliser), `(B,H)`.
    pub exp: Tensor<(usize, usize), E, D>,
    /// `sum_j K_j (C_j v_j)^T`, `(B,H,D,M)`.
    pub kv: Tensor4<E, D>,
}

/// Step-by-step causal Flow-Attention state for a batch: fixed size, O(1) per token.
///
/// Feeding tokens one at a time gives the rows of [`super::causal_flow`] on the same
/// tokens (`FlowSums` holds the five running sums and the `D x M` matrix).
#[derive(Clone, Debug)]
pub struct FlowState<E: Dtype, D: Storage<E>> {
    sums: FlowSums<E, D>,
    cfg: FlowConfig,
    position: usize,
}

impl<E: Dtype + Float, D: ModelDevice<E>> FlowState<E, D> {
    /// An empty state (position 0) for `batch` rows, `heads` heads, query/key size `d`
    /// and value size `m`.
    pub fn new(dev: &D, batch: usize, heads: usize, d: usize, m: usize, cfg: FlowConfig) -> Self {
        let sums = FlowSums {
            key: dev.zeros_like(&(batch, heads, d)),
            query: dev.zeros_like(&(batch, heads, d)),
            key_out: dev.zeros_like(&(batch, heads, d)),
            query_in: dev.zeros_like(&(batch, heads, d)),
            exp: dev.zeros_like(&(batch, heads)),
            kv: dev.zeros_like(&(batch, heads, d, m)),
        };
        Self {
            sums,
            cfg,
            position: 0,
        }
    }

    /// Feeds one token: `q, k (B,H,D)`, `v (B,H,M)` -> its output `(B,H,M)`, equal to
    /// row `position()` of `causal_flow` on all tokens fed so far, with the composed ops
    /// (the state of devices that act on the device; acting on the CPU steps
    /// `crate::host::recurrent`'s host form instead).
    ///
    /// # Panics
    /// If the shapes differ from the ones the state was made for.
    pub fn step(&mut self, q: Tensor3<E, D>, k: Tensor3<E, D>, v: Tensor3<E, D>) -> Tensor3<E, D> {
        self.check(&q, &k, &v);
        self.position += 1;
        composed::flow_step(&mut self.sums, self.position, q, k, v, &self.cfg)
    }

    /// How many tokens have been fed.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Keeps only the batch rows `rows`, in that order (drops finished sequences).
    ///
    /// # Panics
    /// If a row index is not below the batch size.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        let batch = self.sums.kv.shape().0;
        assert!(
            rows.iter().all(|&r| r < batch),
            "FlowState::keep_rows: row index not below the batch size {batch}"
        );
        let idx = self
            .sums
            .kv
            .device()
            .tensor_from_vec(rows.to_vec(), (rows.len(),));
        let s = &mut self.sums;
        s.key = s.key.clone().gather(idx.clone());
        s.query = s.query.clone().gather(idx.clone());
        s.key_out = s.key_out.clone().gather(idx.clone());
        s.query_in = s.query_in.clone().gather(idx.clone());
        s.exp = s.exp.clone().gather(idx.clone());
        s.kv = s.kv.clone().gather(idx);
    }

    /// The running sums after `position()` tokens.
    pub fn sums(&self) -> &FlowSums<E, D> {
        &self.sums
    }

    fn check(&self, q: &Tensor3<E, D>, k: &Tensor3<E, D>, v: &Tensor3<E, D>) {
        let (b, h, d, m) = *self.sums.kv.shape();
        assert_eq!(
            *q.shape(),
            (b, h, d),
            "FlowState::step: q shape differs from (batch, heads, d)"
        );
        assert_eq!(
            *k.shape(),
            (b, h, d),
            "FlowState::step: k shape differs from (batch, heads, d)"
        );
        assert_eq!(
            *v.shape(),
            (b, h, m),
            "FlowState::step: v shape differs from (batch, heads, m)"
        );
    }
}
