//! One pre-LayerNorm block: attention and MLP sub-layers with residual connections.

use dfdx::prelude::*;

use super::backbone::join;
use super::config::BackboneConfig;
use super::recurrent::LayerState;
use crate::attention::{causal_softmax, projected_causal_flow, AttentionKind};
use crate::device::ModelDevice;
use crate::kernels::{gather_rows, merge_heads, mlp_residual, Mlp};
use crate::model::layers::{dropout_add, LayerNorm, Linear, Tensor2, WeightLayout};
use crate::params::{Init, ParamError, ParamStore};

/// GPT-2's initialisation of linear weights: N(0, 0.02²).
const GPT2_WEIGHT: Init = Init::Normal { std: 0.02 };

/// The parameters of one block, by reference name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Block {
    pub(crate) ln_1: LayerNorm,
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) out: Linear,
    pub(crate) ln_2: LayerNorm,
    pub(crate) c_fc: Linear,
    pub(crate) c_proj: Linear,
}

/// What a block's attention reads besides the rows it is given ([`Block::forward`]).
pub(crate) enum Context<'a, E: Dtype, D: Storage<E>> {
    /// Whole sequences: `batch` of `len` tokens; the output keeps the rows `keep`
    /// (flat indices `b·len + t`), or all of them.
    Sequence {
        batch: usize,
        len: usize,
        keep: Option<&'a [usize]>,
    },
    /// The next tokens of `batch` sequences, advancing the block's Flow-Attention
    /// `state`; the output keeps the last token's rows only when `last_only`.
    Step {
        batch: usize,
        state: &'a mut LayerState<E, D>,
        last_only: bool,
    },
}

impl Block {
    /// Registers the block's parameters under `prefix` (`transformer.h.{i}`) in the
    /// reference order.
    pub(crate) fn register<E, D>(
        store: &mut ParamStore<E, D>,
        prefix: &str,
        cfg: &BackboneConfig,
    ) -> Result<Self, ParamError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let w = cfg.width;
        let eps = cfg.layer_norm_eps;
        let linear = |store: &mut ParamStore<E, D>, name: &str, i, o, layout| {
            Linear::register(
                store,
                &join(prefix, name),
                i,
                o,
                layout,
                GPT2_WEIGHT,
                Some(Init::Zeros),
            )
        };
        let ln_1 = LayerNorm::register(store, &join(prefix, "ln_1"), w, eps)?;
        let [query, key, value, out] = ["query", "key", "value", "out"].map(|map| {
            let name = format!("attn.att.{map}_projection");
            linear(store, &name, w, w, WeightLayout::OutIn)
        });
        let (query, key, value, out) = (query?, key?, value?, out?);
        let ln_2 = LayerNorm::register(store, &join(prefix, "ln_2"), w, eps)?;
        let c_fc = linear(store, "mlp.c_fc", w, 4 * w, WeightLayout::InOut)?;
        let c_proj = linear(store, "mlp.c_proj", 4 * w, w, WeightLayout::InOut)?;
        Ok(Self {
            ln_1,
            query,
            key,
            value,
            out,
            ln_2,
            c_fc,
            c_proj,
        })
    }

    /// The block on rows of the residual stream `x`, in the given context:
    ///
    /// - [`Context::Sequence`]: `x (B·L, W)` holds `(batch, length)` whole sequences.
    ///   With `keep`, the output holds only those rows, in that order: attention reads
    ///   every token (its keys, values and, for Flow-Attention, its queries' flow sums),
    ///   but the output projection, the MLP and both residual additions run on the kept
    ///   rows only.
    /// - [`Context::Step`]: `x (n·B, W)` holds the next `n` tokens of `B` sequences,
    ///   token-major (rows `i·B..(i+1)·B` hold token `i`), and the block's Flow-Attention
    ///   state advances by them in order; the layer norm and projections run once on all
    ///   rows. With `last_only`, the output projection and the MLP run on the last
    ///   token's rows only and the output is `(B, W)`. For inference: no gradient flows
    ///   through the state.
    pub(crate) fn forward<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
        context: Context<'_, E, D>,
        cfg: &BackboneConfig,
        train: bool,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let (o, x) = match context {
            Context::Sequence { batch, len, keep } => {
                let heads = (batch, len, cfg.heads);
                let qkv = [&self.query, &self.key, &self.value];
                let o = match cfg.attention {
                    AttentionKind::CausalFlow => projected_causal_flow(
                        x.with_empty_tape(),
                        self.ln_1.params(store),
                        qkv.map(|m| m.affine(store)),
                        heads,
                        &cfg.flow,
                    ),
                    AttentionKind::CausalSoftmax => {
                        let a = self.ln_1.forward(store, x.with_empty_tape());
                        let [q, k, v]: [_; 3] = Linear::forward_heads_of(&qkv, store, a, heads)
                            .try_into()
                            .unwrap_or_else(|_| unreachable!("three maps give three outputs"));
                        merge_heads(causal_softmax(q, k, v))
                    }
                };
                match keep {
                    Some(rows) => (gather_rows(o, rows), gather_rows(x, rows)),
                    None => (o, x),
                }
            }
            Context::Step {
                batch,
                state,
                last_only,
            } => {
                let (x, tape) = x.split_tape();
                let a = self.ln_1.forward(store, x.clone());
                let q = self.query.forward(store, a.clone());
                let k = self.key.forward(store, a.clone());
                let v = self.value.forward(store, a);
                let o = state.advance(q, k, v, (batch, cfg.heads), last_only);
                let n = x.shape().0 / batch;
                let x = if last_only && n > 1 {
                    x.slice(((n - 1) * batch.., ..))
                } else {
                    x
                };
                (o.put_tape(T::default()), x.put_tape(tape))
            }
        };
        // The output projection and its residual, then the MLP sub-layer (LayerNorm, the
        // 4× wide ReLU layer, the projection back) and its residual, as one op.
        let x = dropout_add(self.out.forward(store, o), x, cfg.dropout, train);
        let mlp = Mlp {
            norm: self.ln_2.params(store),
            fc: self.c_fc.affine(store),
            proj: self.c_proj.affine(store),
        };
        mlp_residual(x, mlp, if train { cfg.dropout } else { 0.0 })
    }
}
