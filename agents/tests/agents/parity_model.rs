//! A second parity model: the reference Decision Transformer of the model fixture built
//! in the test around the Flowformer backbone (embeddings and heads from the layers),
//! against the PyTorch outputs, loss and gradients.

use dfdx::prelude::*;
use flowrl_agents::attention::{AttentionKind, FlowConfig};
use flowrl_agents::device::ModelDevice;
use flowrl_agents::model::layers::{LayerNorm, Linear, Tensor3, WeightLayout};
use flowrl_agents::model::{Backbone, BackboneConfig};
use flowrl_agents::params::{Init, ParamGrads, ParamId, ParamStore};

use crate::common::fixture::ModelFixture;
use crate::common::{f64_of, from_f64, max_abs_diff, max_rel_diff, per_token};

/// The fixture's Decision Transformer around the backbone: the embeddings and heads are
/// built here in the test, exactly as STRUCTURE.md describes them.
struct TinyDt {
    backbone: Backbone,
    embed_timestep: ParamId,
    embed_return: Linear,
    embed_state: Linear,
    embed_action: Linear,
    embed_ln: LayerNorm,
    predict_action: Linear,
}

/// Outputs of [`TinyDt::run`] on the fixture batch.
struct TinyDtOutputs<E: Dtype, D: Storage<E>> {
    hidden: Vec<E>,
    action_preds: Vec<E>,
    loss: E,
    grads: ParamGrads<E, D>,
}

impl TinyDt {
    fn register<E>(fx: &ModelFixture, store: &mut ParamStore<E, Cpu>) -> Self
    where
        E: Dtype + num_traits::Float,
        Cpu: ModelDevice<E>,
    {
        let w = fx.cfg_usize("hidden_size");
        let cfg = BackboneConfig {
            width: w,
            heads: fx.cfg_usize("n_head"),
            layers: fx.cfg_usize("n_layer"),
            attention: AttentionKind::CausalFlow,
            dropout: 0.0,
            layer_norm_eps: fx.cfg_f64("layer_norm_epsilon"),
            flow: FlowConfig {
                clamp: fx.cfg_f64("flow_clamp"),
                eps: fx.cfg_f64("flow_eps"),
                ..FlowConfig::rl()
            },
        };
        let (sd, ad) = (fx.cfg_usize("state_dim"), fx.cfg_usize("act_dim"));
        let torch = |store: &mut ParamStore<E, Cpu>, name: &str, i, o| {
            let init = Init::pytorch_linear(i);
            Linear::register(store, name, i, o, WeightLayout::OutIn, init, Some(init)).unwrap()
        };
        store
            .register("transformer.wte.weight", &[1, w], Init::Zeros)
            .unwrap();
        let backbone = Backbone::register(store, "transformer", cfg).unwrap();
        let embed_timestep = store
            .register(
                "embed_timestep.weight",
                &[fx.cfg_usize("max_ep_len"), w],
                Init::Normal { std: 1.0 },
            )
            .unwrap();
        let embed_return = torch(store, "embed_return", 1, w);
        let embed_state = torch(store, "embed_state", sd, w);
        let embed_action = torch(store, "embed_action", ad, w);
        let embed_ln = LayerNorm::register(store, "embed_ln", w, cfg.layer_norm_eps).unwrap();
        torch(store, "predict_state", w, sd);
        let predict_action = torch(store, "predict_action.0", w, ad);
        torch(store, "predict_return", w, 1);
        Self {
            backbone,
            embed_timestep,
            embed_return,
            embed_state,
            embed_action,
            embed_ln,
            predict_action,
        }
    }

    /// Embeds the fixture batch, runs the backbone, predicts actions from the state
    /// tokens, and back-propagates the mean-squared error to every parameter.
    fn run<E>(&self, fx: &ModelFixture, store: &ParamStore<E, Cpu>) -> TinyDtOutputs<E, Cpu>
    where
        E: Dtype + num_traits::Float,
        Cpu: ModelDevice<E>,
    {
        let dev = store.device().clone();
        let (b, k, w) = (
            fx.cfg_usize("batch"),
            fx.cfg_usize("K"),
            fx.cfg_usize("hidden_size"),
        );
        let (sd, ad) = (fx.cfg_usize("state_dim"), fx.cfg_usize("act_dim"));
        let input = |key: &str, d: usize| {
            dev.tensor_from_vec(from_f64(&fx.values(&["inputs", key])), (b, k, d))
        };
        let timesteps: Vec<usize> = fx
            .values(&["inputs", "timesteps"])
            .iter()
            .map(|&t| t as usize)
            .collect();
        let timesteps = dev.tensor_from_vec(timesteps, (b, k));

        let time = store
            .matrix(self.embed_timestep)
            .leaky_traced()
            .gather(timesteps);
        let r = per_token(input("returns_to_go", 1).leaky_traced(), |x| {
            self.embed_return.forward(store, x)
        }) + time.with_empty_tape();
        let s = per_token(input("states", sd).leaky_traced(), |x| {
            self.embed_state.forward(store, x)
        }) + time.with_empty_tape();
        let a = per_token(input("actions", ad).leaky_traced(), |x| {
            self.embed_action.forward(store, x)
        }) + time;
        let tokens: Tensor<(Const<3>, usize, usize, usize), E, Cpu, _> = [r, s, a].stack();
        let tokens = tokens
            .permute::<_, Axes4<1, 2, 0, 3>>()
            .reshape_like(&(b, 3 * k, w));
        let tokens: Tensor3<E, Cpu, _> = per_token(tokens, |x| self.embed_ln.forward(store, x));

        let hidden = self.backbone.forward(store, tokens, false).unwrap();
        let hidden_values = hidden.as_vec();
        let state_tokens = hidden
            .reshape_like(&(b, k, 3, w))
            .slice((.., .., 1..2, ..))
            .reshape_like(&(b * k, w));
        let preds = self.predict_action.forward(store, state_tokens).tanh();
        let action_preds = preds.as_vec();
        let target = dev.tensor_from_vec(
            from_f64(&fx.values(&["training_check", "action_target"])),
            (b * k, ad),
        );
        let loss = (preds - target).square().mean::<Rank0, _>();
        let loss_value = loss.as_vec()[0];
        let mut gradients = loss.backward();
        TinyDtOutputs {
            hidden: hidden_values,
            action_preds,
            loss: loss_value,
            grads: store.grads(&mut gradients),
        }
    }
}

/// The fixture model in `E`, with the fixture's parameters, run on the fixture batch;
/// asserts that its hidden states, action predictions (the fixture's `outputs`) and
/// loss (`loss_key`) are within `tol` of the reference.
fn forward_parity<E>(
    fx: &ModelFixture,
    outputs: &str,
    loss_key: &str,
    tol: f64,
) -> (ParamStore<E, Cpu>, TinyDtOutputs<E, Cpu>)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::default();
    let mut store = ParamStore::<E, Cpu>::new(&dev, 0);
    let dt = TinyDt::register(fx, &mut store);
    fx.load_store(&mut store);
    let out = dt.run(fx, &store);

    let hidden_err = max_abs_diff(&out.hidden, &fx.values(&[outputs, "last_hidden_state"]));
    assert!(
        hidden_err <= tol,
        "last_hidden_state max error {hidden_err:e}"
    );
    let pred_err = max_abs_diff(&out.action_preds, &fx.values(&[outputs, "action_preds"]));
    assert!(pred_err <= tol, "action_preds max error {pred_err:e}");
    let loss_ref = fx.get(&["training_check", loss_key]).as_f64().unwrap();
    let loss = f64_of(out.loss);
    assert!((loss - loss_ref).abs() <= tol, "loss {loss} vs {loss_ref}");
    (store, out)
}

/// Measured on this machine: last_hidden_state within 2e-15, gradients within 2e-16
/// relative; the bounds leave three orders of magnitude for other summation orders.
#[test]
fn fixture_parity_forward_and_backward_f64() {
    let fx = ModelFixture::repo();
    let (store, out) = forward_parity::<f64>(&fx, "outputs_f64", "loss_f64", 1e-12);

    let mut worst = (0.0, String::new());
    for (name, want) in fx.grads() {
        let got = out.grads.get(store.id(&name).unwrap()).as_vec();
        assert_eq!(got.len(), want.len(), "{name}");
        let rel = max_rel_diff(&got, &want);
        if rel > worst.0 {
            worst = (rel, name);
        }
    }
    assert!(
        worst.0 <= 1e-12,
        "worst gradient error {:e} in {}",
        worst.0,
        worst.1
    );
    // Parameters the loss does not reach have exactly zero gradient.
    for unused in [
        "transformer.wte.weight",
        "predict_state.weight",
        "predict_return.bias",
    ] {
        assert!(out
            .grads
            .get(store.id(unused).unwrap())
            .as_vec()
            .iter()
            .all(|&g| g == 0.0));
    }
}

/// Measured: last_hidden_state within 1e-6 of the PyTorch float32 run.
#[test]
fn fixture_parity_forward_f32() {
    forward_parity::<f32>(&ModelFixture::repo(), "outputs_f32", "loss_f32", 1e-5);
}
