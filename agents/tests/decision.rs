//! Agents: Decision-Flowformer parity with the reference PyTorch model, losses and
//! masking, training on toy tasks, acting in both context modes, configs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use flowrl_agents::acting::{ActionPredictions, Actor, ContextMode, Encoder};
use flowrl_agents::agent::{
    ActionSpace, Agent, AgentConfig, AgentError, AgentKind, HostActions, HostWindow, CONFIG_KEY,
};
use flowrl_agents::attention::AttentionKind;
use flowrl_agents::device::ModelDevice;
use flowrl_agents::optim::{AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------- reference fixtures

const REPO_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/decision_flowformer/dt_flowformer_tiny_model.json"
);

/// Parameters of the reference model that flowrl's agent leaves out: GPT-2's unused
/// token table and the state/return heads, none of which enters the loss.
fn left_out(name: &str) -> bool {
    name == "transformer.wte.weight"
        || name.starts_with("predict_state.")
        || name.starts_with("predict_return.")
}

/// One reference model fixture (the layout of `dt_flowformer_tiny_model.json`).
struct Fixture {
    path: PathBuf,
    json: serde_json::Value,
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

impl Fixture {
    fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            json,
        })
    }

    fn get(&self, path: &[&str]) -> &serde_json::Value {
        path.iter().fold(&self.json, |v, k| &v[*k])
    }

    fn values(&self, path: &[&str]) -> Vec<f64> {
        floats(self.get(path))
    }

    fn cfg_usize(&self, key: &str) -> usize {
        self.json["config"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: config.{key} is not an integer", self.path.display()))
            as usize
    }

    fn cfg_f64(&self, key: &str) -> f64 {
        self.json["config"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: config.{key} is not a number", self.path.display()))
    }

    /// The agent config of the fixture's model (dropout off, as the fixture ran).
    fn agent_config(&self, kind: AgentKind) -> AgentConfig {
        let w = self.cfg_usize("hidden_size");
        assert_eq!(
            self.json["config"]["n_inner"].as_u64().map(|x| x as usize),
            Some(4 * w),
            "{}: flowrl's MLP is 4 x hidden",
            self.path.display()
        );
        assert_eq!(
            self.json["config"]["activation_function"].as_str(),
            Some("relu"),
            "{}: flowrl's MLP uses ReLU",
            self.path.display()
        );
        AgentConfig {
            kind,
            obs_dim: self.cfg_usize("state_dim"),
            action: ActionSpace::Continuous {
                dim: self.cfg_usize("act_dim"),
            },
            width: w,
            layers: self.cfg_usize("n_layer"),
            heads: self.cfg_usize("n_head"),
            dropout: 0.0,
            context: self.cfg_usize("K"),
            max_ep_len: self.cfg_usize("max_ep_len"),
            flow_clamp: self.cfg_f64("flow_clamp"),
            layer_norm_eps: self.cfg_f64("layer_norm_epsilon"),
        }
    }

    /// `(name, shape, values)` of every reference parameter.
    fn params(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        self.json["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| {
                let shape = p["shape"].as_array().expect("shape");
                (
                    p["name"].as_str().expect("name").to_string(),
                    shape
                        .iter()
                        .map(|d| d.as_u64().expect("dim") as usize)
                        .collect(),
                    floats(&p["values"]),
                )
            })
            .collect()
    }

    fn grads(&self) -> HashMap<String, Vec<f64>> {
        self.json["training_check"]["grads_f64"]
            .as_array()
            .expect("grads_f64")
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().expect("name").to_string(),
                    floats(&g["values"]),
                )
            })
            .collect()
    }

    /// Loads every agent parameter from the fixture (names one to one, same shapes);
    /// the fixture's other parameters must be the left-out ones.
    fn load_into<E>(&self, agent: &mut Agent<E, Cpu>)
    where
        E: Dtype + num_traits::Float,
        Cpu: ModelDevice<E>,
    {
        let store = agent.params_mut();
        let mut loaded = 0;
        for (name, shape, values) in self.params() {
            match store.id(&name) {
                Ok(id) => {
                    assert_eq!(store.shape(id), shape.as_slice(), "{name}");
                    let values: Vec<E> = values.iter().map(|&x| E::from(x).unwrap()).collect();
                    store.set_values(&name, &values).unwrap();
                    loaded += 1;
                }
                Err(_) => assert!(
                    left_out(&name),
                    "fixture parameter `{name}` has no counterpart"
                ),
            }
        }
        assert_eq!(
            loaded,
            store.len(),
            "every agent parameter comes from the fixture"
        );
    }

    fn host_inputs(&self) -> HostInputs<f64> {
        let b = self.cfg_usize("batch");
        let k = self.cfg_usize("K");
        let floats = |key: &str| self.values(&["inputs", key]);
        HostInputs {
            batch: b,
            len: k,
            states: floats("states"),
            actions: floats("actions"),
            indices: Vec::new(),
            returns: floats("returns_to_go"),
            timesteps: self
                .values(&["inputs", "timesteps"])
                .iter()
                .map(|&t| t as usize)
                .collect(),
            mask: floats("attention_mask"),
        }
    }
}

/// Owned host buffers of a window batch.
#[derive(Clone, Debug)]
struct HostInputs<H = f32> {
    batch: usize,
    len: usize,
    states: Vec<H>,
    actions: Vec<H>,
    indices: Vec<usize>,
    returns: Vec<H>,
    timesteps: Vec<usize>,
    mask: Vec<H>,
}

impl<H> HostInputs<H> {
    fn host(&self) -> HostWindow<'_, H> {
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

/// The model fixtures to check: every `*.json` file with model parameters in `dir`.
fn fixtures_in(dir: &Path) -> Result<Vec<Fixture>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut found = Vec::new();
    for path in paths {
        let fx = Fixture::load(&path)?;
        if fx.json.get("params").is_some() && fx.json.get("training_check").is_some() {
            found.push(fx);
        }
    }
    if found.is_empty() {
        return Err(format!(
            "no model fixture (*.json with params) in {}",
            dir.display()
        ));
    }
    Ok(found)
}

/// The repository's fixture plus every fixture in `FLOWRL_MODEL_FIXTURES` if set.
fn all_fixtures() -> Vec<Fixture> {
    let mut all = vec![Fixture::load(Path::new(REPO_FIXTURE)).expect("repository fixture")];
    if let Some(dir) = std::env::var_os("FLOWRL_MODEL_FIXTURES") {
        all.extend(fixtures_in(Path::new(&dir)).expect("FLOWRL_MODEL_FIXTURES"));
    }
    assert!(!all.is_empty(), "no model fixture found");
    all
}

fn max_abs_diff<E: num_traits::Float>(got: &[E], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g.to_f64().unwrap() - w).abs())
        .fold(0.0, f64::max)
}

/// Parity errors of one fixture: hidden states, action predictions, loss, and the
/// worst per-tensor relative gradient error `max|g - r| / max|r|` (with its name).
struct Parity {
    hidden: f64,
    preds: f64,
    loss: f64,
    grad: (f64, String),
}

fn parity<E>(fx: &Fixture, outputs: &str, loss_key: &str) -> Parity
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::default();
    let mut agent = Agent::<E, Cpu>::new(&dev, fx.agent_config(AgentKind::DecisionFlowformer), 0)
        .expect("fixture config is valid");
    fx.load_into(&mut agent);
    let inputs = fx.host_inputs();
    let target = fx.values(&["training_check", "action_target"]);
    let w = agent
        .window(&inputs.host())
        .and_then(|w| w.with_targets(HostActions::Continuous(&target)))
        .expect("fixture window");

    let hidden = agent
        .hidden_states(&w)
        .unwrap()
        .expect("sequence model")
        .as_vec();
    let preds = agent.predict(&w).unwrap().as_vec();
    let loss = agent.loss(&w, false).unwrap();
    let loss_value = loss.as_vec()[0].to_f64().unwrap();
    let mut gradients = loss.backward();
    let grads = agent.params().grads(&mut gradients);

    let reference = fx.grads();
    let mut worst = (0.0, String::new());
    for id in agent.params().ids() {
        let name = agent.params().name(id);
        let want = &reference[name];
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
        let rel = max_abs_diff(&grads.get(id).as_vec(), want) / scale;
        if rel > worst.0 {
            worst = (rel, name.to_string());
        }
    }
    for (name, g) in &reference {
        if left_out(name) {
            assert!(
                g.iter().all(|&x| x == 0.0),
                "left-out `{name}` has a gradient in the fixture"
            );
        }
    }
    Parity {
        hidden: max_abs_diff(&hidden, &fx.values(&[outputs, "last_hidden_state"])),
        preds: max_abs_diff(&preds, &fx.values(&[outputs, "action_preds"])),
        loss: (loss_value - fx.get(&["training_check", loss_key]).as_f64().unwrap()).abs(),
        grad: worst,
    }
}

/// Measured on this machine (repository fixture): hidden and action predictions
/// within 2e-15, loss within 1e-16, gradients within 3e-15 relative.
#[test]
fn fixture_parity_f64_outputs_loss_and_every_gradient() {
    for fx in all_fixtures() {
        let p = parity::<f64>(&fx, "outputs_f64", "loss_f64");
        let at = fx.path.display();
        println!(
            "{at}: f64 hidden {:e}, preds {:e}, loss {:e}, grad {:e} ({})",
            p.hidden, p.preds, p.loss, p.grad.0, p.grad.1
        );
        assert!(
            p.hidden <= 1e-9,
            "{at}: last_hidden_state error {:e}",
            p.hidden
        );
        assert!(p.preds <= 1e-9, "{at}: action_preds error {:e}", p.preds);
        assert!(p.loss <= 1e-9, "{at}: loss error {:e}", p.loss);
        assert!(
            p.grad.0 <= 1e-8,
            "{at}: gradient of {} off by {:e}",
            p.grad.1,
            p.grad.0
        );
    }
}

/// Measured: hidden and predictions within 1e-6 of the PyTorch float32 run; f32
/// gradients within 1e-5 relative of the float64 reference.
#[test]
fn fixture_parity_f32_outputs_loss_and_gradients() {
    for fx in all_fixtures() {
        let p = parity::<f32>(&fx, "outputs_f32", "loss_f32");
        let at = fx.path.display();
        println!(
            "{at}: f32 hidden {:e}, preds {:e}, loss {:e}, grad {:e} ({})",
            p.hidden, p.preds, p.loss, p.grad.0, p.grad.1
        );
        assert!(
            p.hidden <= 1e-4,
            "{at}: last_hidden_state error {:e}",
            p.hidden
        );
        assert!(p.preds <= 1e-4, "{at}: action_preds error {:e}", p.preds);
        assert!(p.loss <= 1e-4, "{at}: loss error {:e}", p.loss);
        assert!(
            p.grad.0 <= 1e-3,
            "{at}: gradient of {} off by {:e}",
            p.grad.1,
            p.grad.0
        );
    }
}

#[test]
fn model_fixture_folders_are_scanned_and_an_empty_one_fails() {
    let dir = std::env::temp_dir().join(format!("flowrl-agent-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("README.md"), "not a fixture").unwrap();
    std::fs::write(dir.join("other.json"), "{\"a\": 1}").unwrap();
    let err = fixtures_in(&dir).err().expect("no fixture is an error");
    assert!(err.contains("no model fixture"), "{err}");
    std::fs::copy(REPO_FIXTURE, dir.join("copy_model.json")).unwrap();
    let found = fixtures_in(&dir).unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].path.ends_with("copy_model.json"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(fixtures_in(&dir).is_err(), "a missing folder is an error");
}

// ---------------------------------------------------------------- helpers

const CONTINUOUS: ActionSpace = ActionSpace::Continuous { dim: 2 };
const DISCRETE: ActionSpace = ActionSpace::Discrete { n: 3 };

/// A small agent config: obs 3, width 16, 2 layers, 2 heads, K 6, no dropout.
fn small(kind: AgentKind, action: ActionSpace) -> AgentConfig {
    AgentConfig {
        width: 16,
        layers: 2,
        heads: 2,
        dropout: 0.0,
        context: 6,
        max_ep_len: 300,
        ..AgentConfig::new(kind, 3, action)
    }
}

/// Random inputs of `lengths.len()` rows of `len` steps; row `r` has `lengths[r]`
/// real steps (padding holds zeros). Timesteps start at a random episode step.
fn random_inputs<R: Rng>(
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
fn fill_step<R: Rng>(rng: &mut R, cfg: &AgentConfig, x: &mut HostInputs, s: usize) {
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

fn loss_and_grads<E>(agent: &Agent<E, Cpu>, x: &HostInputs, train: bool) -> (f64, Vec<Vec<E>>)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
{
    let w = agent.window(&x.host()).unwrap();
    let loss = agent.loss(&w, train).unwrap();
    let value = loss.as_vec()[0].to_f64().unwrap();
    let mut gradients = loss.backward();
    let grads = agent.params().grads(&mut gradients);
    let grads = agent
        .params()
        .ids()
        .map(|id| grads.get(id).as_vec())
        .collect();
    (value, grads)
}

const ALL_KINDS: [(AgentKind, ActionSpace); 5] = [
    (AgentKind::DecisionFlowformer, CONTINUOUS),
    (AgentKind::DecisionFlowformer, DISCRETE),
    (AgentKind::DecisionTransformer, CONTINUOUS),
    (AgentKind::MlpBc, CONTINUOUS),
    (AgentKind::MlpBc, DISCRETE),
];

// ---------------------------------------------------------------- losses and masking

/// The loss of a padded batch is the mean over its real steps: changing anything at
/// padded steps leaves the loss and every gradient unchanged, and the batch loss is
/// the step-weighted mean of the rows' losses computed alone without padding.
#[test]
fn padding_never_counts_in_the_loss() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 3).unwrap();
        let lengths = [6, 3, 1];
        let x = random_inputs(&mut rng, &cfg, 6, &lengths);
        let (loss, grads) = loss_and_grads(&agent, &x, false);

        let mut y = x.clone();
        for (r, &n) in lengths.iter().enumerate() {
            for t in n..6 {
                fill_step(&mut rng, &cfg, &mut y, r * 6 + t);
                y.timesteps[r * 6 + t] = rng.gen_range(0..cfg.max_ep_len);
            }
        }
        let (loss_y, grads_y) = loss_and_grads(&agent, &y, false);
        assert!(
            (loss - loss_y).abs() <= 1e-14,
            "{kind:?}: {loss} vs {loss_y}"
        );
        for (g, h) in grads.iter().zip(&grads_y) {
            for (a, b) in g.iter().zip(h) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + a.abs()),
                    "{kind:?}: gradient {a} vs {b}"
                );
            }
        }

        let mut weighted = 0.0;
        for (r, &n) in lengths.iter().enumerate() {
            let row = |v: &[f32], width: usize| v[r * 6 * width..(r * 6 + n) * width].to_vec();
            let alone = HostInputs {
                batch: 1,
                len: n,
                states: row(&x.states, cfg.obs_dim),
                actions: if x.actions.is_empty() {
                    Vec::new()
                } else {
                    row(&x.actions, 2)
                },
                indices: x
                    .indices
                    .get(r * 6..r * 6 + n)
                    .map(<[usize]>::to_vec)
                    .unwrap_or_default(),
                returns: row(&x.returns, 1),
                timesteps: x.timesteps[r * 6..r * 6 + n].to_vec(),
                mask: vec![1.0; n],
            };
            weighted += n as f64 * loss_and_grads(&agent, &alone, false).0;
        }
        let mean = weighted / lengths.iter().sum::<usize>() as f64;
        assert!(
            (loss - mean).abs() <= 1e-12,
            "{kind:?}: batch {loss} vs per-row mean {mean}"
        );
    }
}

/// The losses are computed by hand from `predict`: mean squared error over every
/// value of the real steps, mean cross-entropy of the real steps' logits.
#[test]
fn losses_match_a_hand_computation_from_the_predictions() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 2).unwrap();
        let lengths = [5, 2, 6];
        let x = random_inputs(&mut rng, &cfg, 6, &lengths);
        let preds = agent.predict(&agent.window(&x.host()).unwrap()).unwrap();
        assert_eq!(*preds.shape(), (3, 6, action.outputs()));
        let p = preds.as_vec();
        let width = action.outputs();
        let (mut total, mut count) = (0.0, 0.0);
        for (r, &n) in lengths.iter().enumerate() {
            for t in 0..n {
                let s = r * 6 + t;
                let row = &p[s * width..(s + 1) * width];
                match action {
                    ActionSpace::Continuous { dim } => {
                        let target = &x.actions[s * dim..(s + 1) * dim];
                        for (p, &a) in row.iter().zip(target) {
                            total += (p - a as f64).powi(2);
                            count += 1.0;
                        }
                    }
                    ActionSpace::Discrete { .. } => {
                        let top = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                        let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
                        total += lse - row[x.indices[s]];
                        count += 1.0;
                    }
                }
            }
        }
        let (loss, _) = loss_and_grads(&agent, &x, false);
        let want = total / count;
        assert!(
            (loss - want).abs() <= 1e-12,
            "{kind:?} {action:?}: {loss} vs {want}"
        );
    }
}

/// Every parameter of every agent is reached by the loss (tables used as the left
/// operand of a gather included).
#[test]
fn every_parameter_gets_a_gradient() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 6).unwrap();
        let x = random_inputs(&mut rng, &cfg, 6, &[6, 4]);
        let (_, grads) = loss_and_grads(&agent, &x, false);
        for (id, g) in agent.params().ids().zip(&grads) {
            assert!(
                g.iter().any(|&v| v != 0.0),
                "{kind:?} {action:?}: `{}` has no gradient",
                agent.params().name(id)
            );
        }
    }
}

/// Dropout acts in train mode only: eval losses repeat, train losses differ from them.
#[test]
fn dropout_is_active_in_train_mode_only() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (kind, action) in [
        (AgentKind::DecisionFlowformer, CONTINUOUS),
        (AgentKind::MlpBc, DISCRETE),
    ] {
        let cfg = AgentConfig {
            dropout: 0.3,
            ..small(kind, action)
        };
        let agent = Agent::<f32, Cpu>::new(&dev, cfg, 1).unwrap();
        let x = random_inputs(&mut rng, &cfg, 6, &[6, 6]);
        let eval = loss_and_grads(&agent, &x, false).0;
        assert_eq!(eval, loss_and_grads(&agent, &x, false).0, "{kind:?}");
        let train = loss_and_grads(&agent, &x, true).0;
        assert!(
            (train - eval).abs() > 1e-6,
            "{kind:?}: train {train} == eval {eval}"
        );
    }
}

/// A few AdamW steps on a fixed toy batch: the loss falls well below its start.
fn trains(
    cfg: AgentConfig,
    target: impl Fn(&[f32]) -> (Vec<f32>, usize),
    steps: usize,
) -> (f64, f64) {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut agent = Agent::<f32, Cpu>::new(&dev, cfg, 5).unwrap();
    let mut x = random_inputs(&mut rng, &cfg, cfg.context, &[cfg.context; 16]);
    for s in 0..16 * cfg.context {
        let (a, i) = target(&x.states[s * cfg.obs_dim..(s + 1) * cfg.obs_dim]);
        match cfg.action {
            ActionSpace::Continuous { dim } => {
                x.actions[s * dim..(s + 1) * dim].copy_from_slice(&a)
            }
            ActionSpace::Discrete { .. } => x.indices[s] = i,
        }
    }
    let w = agent.window(&x.host()).unwrap();
    let mut opt = AdamW::new(
        agent.params(),
        AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let loss = agent.loss(&w, true).unwrap();
        losses.push(loss.as_vec()[0] as f64);
        let mut gradients = loss.backward();
        let grads = agent.params().grads(&mut gradients);
        opt.update(agent.params_mut(), &grads).unwrap();
    }
    let last = agent.loss(&w, false).unwrap().as_vec()[0] as f64;
    (losses[0], last)
}

/// Discrete Decision-Flowformer: the action is the index of the largest state value.
#[test]
fn discrete_decision_flowformer_learns_a_toy_task() {
    let cfg = AgentConfig {
        dropout: 0.1,
        ..small(AgentKind::DecisionFlowformer, DISCRETE)
    };
    let argmax = |s: &[f32]| {
        (
            Vec::new(),
            (0..3).fold(0, |b, j| if s[j] > s[b] { j } else { b }),
        )
    };
    let (first, last) = trains(cfg, argmax, 40);
    println!("discrete DF: cross-entropy {first} -> {last}");
    assert!(last < 0.5 * first, "cross-entropy {first} -> {last}");
}

/// MLP behaviour cloning, continuous (`a = tanh(s0), tanh(-s1)`) and discrete.
#[test]
fn mlp_bc_learns_toy_tasks() {
    let cfg = AgentConfig {
        width: 32,
        dropout: 0.1,
        ..small(AgentKind::MlpBc, CONTINUOUS)
    };
    let smooth = |s: &[f32]| (vec![s[0].tanh(), (-s[1]).tanh()], 0);
    let (first, last) = trains(cfg, smooth, 60);
    println!("MLP BC continuous: mse {first} -> {last}");
    assert!(last < 0.2 * first, "mse {first} -> {last}");

    let cfg = AgentConfig {
        width: 32,
        ..small(AgentKind::MlpBc, DISCRETE)
    };
    let argmax = |s: &[f32]| {
        (
            Vec::new(),
            (0..3).fold(0, |b, j| if s[j] > s[b] { j } else { b }),
        )
    };
    let (first, last) = trains(cfg, argmax, 60);
    println!("MLP BC discrete: cross-entropy {first} -> {last}");
    assert!(last < 0.5 * first, "cross-entropy {first} -> {last}");
}

/// The softmax twin takes the fixture's parameters under the same names, gives
/// outputs of the same shapes that differ from Flow-Attention's, and gradients for
/// every parameter; it has no recurrent state.
#[test]
fn softmax_decision_transformer_shares_names_and_shapes() {
    let fx = Fixture::load(Path::new(REPO_FIXTURE)).unwrap();
    let dev = Cpu::default();
    let mut soft =
        Agent::<f64, Cpu>::new(&dev, fx.agent_config(AgentKind::DecisionTransformer), 0).unwrap();
    let mut flow =
        Agent::<f64, Cpu>::new(&dev, fx.agent_config(AgentKind::DecisionFlowformer), 0).unwrap();
    fx.load_into(&mut soft);
    fx.load_into(&mut flow);
    let x = fx.host_inputs();
    let ws = soft.window(&x.host()).unwrap();
    let wf = flow.window(&x.host()).unwrap();
    let ps = soft.predict(&ws).unwrap();
    let pf = flow.predict(&wf).unwrap();
    assert_eq!(ps.shape(), pf.shape());
    assert_eq!(*ps.shape(), (2, 6, 2));
    let diff = max_abs_diff(&ps.as_vec(), &pf.as_vec());
    assert!(diff > 1e-3, "softmax and flow outputs coincide ({diff:e})");
    assert!(ps.as_vec().iter().all(|v| v.abs() <= 1.0), "tanh outputs");
    let loss = soft.loss(&ws, false).unwrap();
    assert!(loss.as_vec()[0].is_finite());
    let mut gradients = loss.backward();
    let grads = soft.params().grads(&mut gradients);
    for id in soft.params().ids() {
        assert!(
            grads.get(id).as_vec().iter().any(|&g| g != 0.0),
            "{} has no gradient",
            soft.params().name(id)
        );
    }
    assert_eq!(
        soft.recurrent_state(2).err(),
        Some(AgentError::NoRecurrentState(AttentionKind::CausalSoftmax))
    );
}

/// Names follow the reference; initial values follow STRUCTURE.md and the seed.
#[test]
fn parameters_follow_reference_names_and_initialisation() {
    let dev = Cpu::default();
    let fx = Fixture::load(Path::new(REPO_FIXTURE)).unwrap();
    let agent =
        Agent::<f64, Cpu>::new(&dev, fx.agent_config(AgentKind::DecisionFlowformer), 4).unwrap();
    let mut names: Vec<String> = agent
        .params()
        .ids()
        .map(|id| agent.params().name(id).to_string())
        .collect();
    let mut want: Vec<String> = fx
        .params()
        .into_iter()
        .map(|p| p.0)
        .filter(|n| !left_out(n))
        .collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);

    let cfg = AgentConfig {
        width: 64,
        max_ep_len: 1000,
        ..small(AgentKind::DecisionFlowformer, DISCRETE)
    };
    let agent = Agent::<f64, Cpu>::new(&dev, cfg, 4).unwrap();
    let p = agent.params();
    let stats = |name: &str| {
        let v = p.values(p.id(name).unwrap());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (
            mean,
            var.sqrt(),
            v.iter().fold(0.0f64, |m, x| m.max(x.abs())),
        )
    };
    assert_eq!(p.shape(p.id("embed_action.weight").unwrap()), &[3, 64]);
    assert_eq!(p.shape(p.id("predict_action.0.weight").unwrap()), &[3, 64]);
    let (_, std, _) = stats("embed_timestep.weight");
    assert!((std - 1.0).abs() < 0.02, "embed_timestep std {std}");
    let (_, std, _) = stats("transformer.h.0.attn.att.query_projection.weight");
    assert!((std - 0.02).abs() < 0.002, "GPT-2 init std {std}");
    let (_, _, max) = stats("embed_state.weight");
    assert!(
        max <= 1.0 / 3f64.sqrt() && max > 0.5,
        "uniform ±1/sqrt(3), max {max}"
    );
    assert_eq!(stats("embed_ln.weight"), (1.0, 0.0, 1.0));
    assert_eq!(stats("embed_ln.bias"), (0.0, 0.0, 0.0));
    let again = Agent::<f64, Cpu>::new(&dev, cfg, 4).unwrap();
    let other = Agent::<f64, Cpu>::new(&dev, cfg, 5).unwrap();
    let id = p.id("embed_timestep.weight").unwrap();
    assert_eq!(
        p.values(id),
        again.params().values(id),
        "same seed, same values"
    );
    assert_ne!(p.values(id), other.params().values(id));

    let mlp = Agent::<f32, Cpu>::new(&dev, small(AgentKind::MlpBc, CONTINUOUS), 0).unwrap();
    let names: Vec<&str> = mlp.params().ids().map(|id| mlp.params().name(id)).collect();
    assert_eq!(
        names,
        [
            "model.0.weight",
            "model.0.bias",
            "model.3.weight",
            "model.3.bias",
            "model.6.weight",
            "model.6.bias"
        ]
    );
}

// ---------------------------------------------------------------- acting

/// Plays `steps` steps of random episodes with two actors in lockstep and returns the
/// largest difference of their predictions; rows are dropped as `drops` says
/// (`(step, rows kept)`).
fn compare_actors(
    agent: &Agent<f32, Cpu>,
    a: ContextMode,
    b: ContextMode,
    batch: usize,
    steps: usize,
    drops: &[(usize, Vec<usize>)],
) -> f64 {
    let cfg = *agent.config();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut first = Actor::new(agent, a, batch).unwrap();
    let mut second = Actor::new(agent, b, batch).unwrap();
    let mut worst = 0.0f64;
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    for t in 0..steps {
        if let Some((_, keep)) = drops.iter().find(|(s, _)| *s == t) {
            first.keep_rows(keep).unwrap();
            second.keep_rows(keep).unwrap();
        }
        let n = first.batch();
        let returns: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..3.0)).collect();
        let states: Vec<f32> = (0..n * cfg.obs_dim)
            .map(|_| rng.gen_range(-2.0..2.0))
            .collect();
        let p = first.observe(&returns, &states).unwrap();
        let q = second.observe(&returns, &states).unwrap();
        assert_eq!((p.batch, p.width), (q.batch, q.width));
        for &v in &p.values {
            range = (range.0.min(v), range.1.max(v));
        }
        worst = p
            .values
            .iter()
            .zip(&q.values)
            .fold(worst, |m, (x, y)| m.max((x - y).abs() as f64));
        match cfg.action {
            ActionSpace::Continuous { .. } => {
                let acts: Vec<f32> = p
                    .values
                    .iter()
                    .map(|v| (v + rng.gen_range(-0.3..0.3)).clamp(-1.0, 1.0))
                    .collect();
                first.record(HostActions::Continuous(&acts)).unwrap();
                second.record(HostActions::Continuous(&acts)).unwrap();
            }
            ActionSpace::Discrete { .. } => {
                let acts = p.sample(1.0, &mut rng).unwrap();
                first.record(HostActions::Discrete(&acts)).unwrap();
                second.record(HostActions::Discrete(&acts)).unwrap();
            }
        }
    }
    assert!(
        range.1 - range.0 > 0.1,
        "predictions barely vary ({range:?}): the comparison would prove little"
    );
    worst
}

/// Episode mode (recurrent Flow-Attention state) chooses the same actions as
/// re-encoding the whole history every step, over 200 steps, also after finished
/// episodes are dropped from the batch.
#[test]
fn episode_mode_equals_reencoding_the_whole_history() {
    let dev = Cpu::default();
    for (action, steps) in [(CONTINUOUS, 200), (DISCRETE, 60)] {
        let cfg = AgentConfig {
            context: 256,
            ..small(AgentKind::DecisionFlowformer, action)
        };
        let agent = Agent::<f32, Cpu>::new(&dev, cfg, 9).unwrap();
        let drops = [(40, vec![0, 2, 3]), (120, vec![2, 0])];
        let err = compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            4,
            steps,
            &drops,
        );
        println!("{action:?}: episode vs re-encode max difference {err:e}");
        assert!(
            err <= 1e-5,
            "{action:?}: episode mode differs from re-encoding by {err:e}"
        );
    }
}

/// Window mode re-encodes the last K steps with their absolute timesteps, positions
/// restarting at the window start: the same as `predict_last` on that window.
#[test]
fn window_mode_reencodes_the_last_k_steps() {
    let dev = Cpu::default();
    let cfg = AgentConfig {
        context: 4,
        ..small(AgentKind::DecisionFlowformer, CONTINUOUS)
    };
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // The tensor path computes what `predict_last` computes, bit for bit (the host path
    // agrees up to rounding: tests/acting.rs).
    let mut actor = Actor::with_encoder(&agent, ContextMode::Window, 2, Encoder::Tensors).unwrap();
    let mut episode = Actor::new(&agent, ContextMode::Episode, 2).unwrap();
    let mut history = random_inputs(&mut rng, &cfg, 10, &[10, 10]);
    for r in 0..2 {
        for t in 0..10 {
            history.timesteps[r * 10 + t] = t;
        }
    }
    let (obs, dim) = (3, 2);
    let mut last = None;
    let mut from_episode = None;
    for t in 0..10 {
        let returns: Vec<f32> = (0..2).map(|r| history.returns[r * 10 + t]).collect();
        let states: Vec<f32> = (0..2)
            .flat_map(|r| history.states[(r * 10 + t) * obs..(r * 10 + t + 1) * obs].to_vec())
            .collect();
        let actions: Vec<f32> = (0..2)
            .flat_map(|r| history.actions[(r * 10 + t) * dim..(r * 10 + t + 1) * dim].to_vec())
            .collect();
        last = Some(actor.observe(&returns, &states).unwrap());
        from_episode = Some(episode.observe(&returns, &states).unwrap());
        actor.record(HostActions::Continuous(&actions)).unwrap();
        episode.record(HostActions::Continuous(&actions)).unwrap();
    }
    // The window of steps 6..=9, with the current action slot zeroed.
    let mut window = HostInputs {
        len: 4,
        ..history.clone()
    };
    let pick = |v: &[f32], width: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|r| v[(r * 10 + 6) * width..(r * 10 + 10) * width].to_vec())
            .collect()
    };
    window.states = pick(&history.states, obs);
    window.actions = pick(&history.actions, dim);
    for r in 0..2 {
        window.actions[(r * 4 + 3) * dim..(r * 4 + 4) * dim].fill(0.0);
    }
    window.returns = pick(&history.returns, 1);
    window.timesteps = (0..2).flat_map(|_| 6..10).collect();
    window.mask = vec![1.0; 8];
    let want = agent
        .predict_last(&agent.window(&window.host()).unwrap())
        .unwrap()
        .as_vec();
    let got = last.unwrap();
    assert_eq!(
        got.values, want,
        "window mode equals predict_last on the last K steps"
    );
    let full = from_episode.unwrap();
    let diff = max_abs_diff(
        &got.values,
        &full.values.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    assert!(
        diff > 1e-4,
        "a 4-step window should differ from the whole episode ({diff:e})"
    );
}

/// The softmax model's episode mode re-encodes everything (same as a window longer
/// than the episode); the MLP's episode mode equals its window mode.
#[test]
fn episode_mode_of_softmax_and_mlp_reencodes() {
    let dev = Cpu::default();
    let cfg = AgentConfig {
        context: 64,
        ..small(AgentKind::DecisionTransformer, CONTINUOUS)
    };
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 2).unwrap();
    assert_eq!(
        compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            2,
            30,
            &[]
        ),
        0.0
    );
    let agent = Agent::<f32, Cpu>::new(&dev, small(AgentKind::MlpBc, DISCRETE), 2).unwrap();
    assert_eq!(
        compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            3,
            10,
            &[(5, vec![1])]
        ),
        0.0
    );
    assert!(matches!(
        agent.recurrent_state(1),
        Err(AgentError::Acting(_))
    ));
}

#[test]
fn acting_calls_out_of_order_or_with_bad_inputs_are_errors() {
    let dev = Cpu::default();
    let agent =
        Agent::<f32, Cpu>::new(&dev, small(AgentKind::DecisionFlowformer, DISCRETE), 0).unwrap();
    for mode in [ContextMode::Window, ContextMode::Episode] {
        let mut actor = Actor::new(&agent, mode, 2).unwrap();
        assert!(matches!(
            actor.record(HostActions::Discrete(&[0, 1])),
            Err(AgentError::Acting(_))
        ));
        assert!(matches!(
            actor.observe(&[1.0], &[0.0; 6]),
            Err(AgentError::Window {
                field: "returns_to_go",
                ..
            })
        ));
        assert!(matches!(
            actor.observe(&[1.0, f32::NAN], &[0.0; 6]),
            Err(AgentError::Window { .. })
        ));
        actor.observe(&[1.0, 2.0], &[0.0; 6]).unwrap();
        assert!(matches!(
            actor.observe(&[1.0, 2.0], &[0.0; 6]),
            Err(AgentError::Acting(_))
        ));
        assert!(matches!(
            actor.record(HostActions::Discrete(&[0, 3])),
            Err(AgentError::Window {
                field: "actions",
                ..
            })
        ));
        assert!(matches!(
            actor.record(HostActions::Continuous(&[0.0, 0.0])),
            Err(AgentError::Window { .. })
        ));
        assert!(matches!(actor.keep_rows(&[2]), Err(AgentError::Acting(_))));
        actor.keep_rows(&[1]).unwrap();
        assert_eq!(actor.batch(), 1);
        actor.record(HostActions::Discrete(&[2])).unwrap();
        assert_eq!(actor.observe(&[1.0], &[0.0; 3]).unwrap().batch, 1);
    }
}

#[test]
fn discrete_helpers_pick_greedily_and_sample_reproducibly() {
    let preds = ActionPredictions {
        batch: 2,
        width: 3,
        values: vec![0.1f32, 2.0, -1.0, 5.0, 5.0, 1.0],
    };
    assert_eq!(preds.greedy(), vec![1, 0]);
    assert_eq!(preds.row(1), &[5.0, 5.0, 1.0]);
    let draw = |seed| {
        preds
            .sample(1.0, &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap()
    };
    assert_eq!(draw(1), draw(1));
    let cold = preds
        .sample(1e-3, &mut ChaCha8Rng::seed_from_u64(2))
        .unwrap();
    assert_eq!(cold[0], 1, "a low temperature is greedy");
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            preds.sample(t, &mut ChaCha8Rng::seed_from_u64(0)),
            Err(AgentError::Config {
                field: "temperature",
                ..
            })
        ));
    }
    // logits [0, ln 3]: probabilities 1/4, 3/4.
    let two = ActionPredictions {
        batch: 1,
        width: 2,
        values: vec![0.0f64, 3f64.ln()],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ones = (0..4000)
        .filter(|_| two.sample(1.0, &mut rng).unwrap()[0] == 1)
        .count();
    let freq = ones as f64 / 4000.0;
    assert!((freq - 0.75).abs() < 0.03, "frequency {freq}");
    let nan = ActionPredictions {
        batch: 1,
        width: 2,
        values: vec![f32::NAN, 0.0],
    };
    assert!(nan.sample(1.0, &mut rng).is_err());
}

// ---------------------------------------------------------------- configs and windows

#[test]
fn config_validation_names_the_bad_field_and_serde_round_trips() {
    let good = small(AgentKind::DecisionFlowformer, CONTINUOUS);
    good.validate().unwrap();
    let cases: Vec<(&str, AgentConfig)> = vec![
        ("obs_dim", AgentConfig { obs_dim: 0, ..good }),
        (
            "action.dim",
            AgentConfig {
                action: ActionSpace::Continuous { dim: 0 },
                ..good
            },
        ),
        (
            "action.n",
            AgentConfig {
                action: ActionSpace::Discrete { n: 1 },
                ..good
            },
        ),
        ("width", AgentConfig { width: 0, ..good }),
        (
            "dropout",
            AgentConfig {
                dropout: 1.0,
                ..good
            },
        ),
        (
            "dropout",
            AgentConfig {
                dropout: f64::NAN,
                ..good
            },
        ),
        ("context", AgentConfig { context: 0, ..good }),
        (
            "max_ep_len",
            AgentConfig {
                max_ep_len: 0,
                ..good
            },
        ),
        ("layers", AgentConfig { layers: 0, ..good }),
        ("heads", AgentConfig { heads: 3, ..good }),
        ("heads", AgentConfig { heads: 0, ..good }),
        (
            "flow_clamp",
            AgentConfig {
                flow_clamp: 0.0,
                ..good
            },
        ),
        (
            "layer_norm_eps",
            AgentConfig {
                layer_norm_eps: -1.0,
                ..good
            },
        ),
    ];
    let dev = Cpu::default();
    for (field, cfg) in cases {
        match cfg.validate() {
            Err(AgentError::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
        assert!(Agent::<f32, Cpu>::new(&dev, cfg, 0).is_err(), "{field}");
    }
    // The MLP ignores the transformer's fields.
    AgentConfig {
        heads: 3,
        layers: 0,
        ..small(AgentKind::MlpBc, DISCRETE)
    }
    .validate()
    .unwrap();

    let json = serde_json::to_string(&good).unwrap();
    assert!(json.contains("\"kind\":\"decision_flowformer\""), "{json}");
    assert!(
        json.contains("\"action\":{\"type\":\"continuous\",\"dim\":2}"),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<AgentConfig>(&json).unwrap(), good);
    let extra = json.replace("\"width\"", "\"widht\":1,\"width\"");
    assert!(
        serde_json::from_str::<AgentConfig>(&extra).is_err(),
        "unknown fields are rejected"
    );
}

#[test]
fn windows_are_validated_with_errors_naming_the_input() {
    let dev = Cpu::default();
    let cfg = small(AgentKind::DecisionFlowformer, DISCRETE);
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random_inputs(&mut rng, &cfg, 4, &[4, 2]);
    agent.window(&x.host()).unwrap();
    let field = |x: &HostInputs| match agent.window(&x.host()) {
        Err(AgentError::Window { field, .. }) => field,
        other => panic!("expected a window error, got {:?}", other.map(|_| ())),
    };
    let mut y = x.clone();
    y.states.pop();
    assert_eq!(field(&y), "states");
    let mut y = x.clone();
    y.states[5] = f32::INFINITY;
    assert_eq!(field(&y), "states");
    let mut y = x.clone();
    y.returns[0] = f32::NAN;
    assert_eq!(field(&y), "returns_to_go");
    let mut y = x.clone();
    y.timesteps[1] = cfg.max_ep_len;
    assert_eq!(field(&y), "timesteps");
    let mut y = x.clone();
    y.indices[2] = 3;
    assert_eq!(field(&y), "actions");
    let mut y = x.clone();
    y.mask[1] = 0.5;
    assert_eq!(field(&y), "mask");
    let mut y = x.clone();
    y.mask[4] = 0.0;
    assert_eq!(field(&y), "mask", "a row starting with padding");
    let mut y = x.clone();
    y.mask[7] = 1.0;
    assert_eq!(field(&y), "mask", "a real step after padding");
    let mut y = x.clone();
    y.actions = vec![0.0; 16];
    y.indices.clear();
    assert_eq!(
        field(&y),
        "actions",
        "continuous actions for a discrete agent"
    );
    let y = HostInputs {
        batch: 0,
        ..x.clone()
    };
    assert_eq!(field(&y), "batch/len");

    // A window built for another agent is rejected by this one.
    let other = Agent::<f32, Cpu>::new(&dev, AgentConfig { obs_dim: 4, ..cfg }, 0).unwrap();
    let mut z = random_inputs(&mut rng, other.config(), 4, &[4]);
    z.timesteps.fill(0);
    let w = other.window(&z.host()).unwrap();
    assert!(matches!(
        agent.loss(&w, false),
        Err(AgentError::Window {
            field: "states",
            ..
        })
    ));
    let w = agent.window(&x.host()).unwrap();
    assert!(w
        .clone()
        .with_targets(HostActions::<f32>::Discrete(&[0; 3]))
        .is_err());
    assert_eq!(
        (w.batch(), w.len(), w.lengths(), w.valid_steps()),
        (2, 4, &[4, 2][..], 6)
    );
}

#[test]
fn checkpoints_rebuild_the_agent_from_its_config() {
    let dev = Cpu::default();
    let cfg = small(AgentKind::DecisionFlowformer, DISCRETE);
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 13).unwrap();
    let extra = HashMap::from([("step".to_string(), "42".to_string())]);
    let bytes = agent.to_safetensors(&extra).unwrap();
    let (back, metadata) = Agent::<f32, Cpu>::from_safetensors(&dev, &bytes).unwrap();
    assert_eq!(back.config(), &cfg);
    assert_eq!(metadata.get("step").map(String::as_str), Some("42"));
    assert!(metadata.contains_key(CONFIG_KEY));
    let x = random_inputs(&mut ChaCha8Rng::seed_from_u64(2), &cfg, 6, &[6, 4]);
    let before = agent
        .predict(&agent.window(&x.host()).unwrap())
        .unwrap()
        .as_vec();
    let after = back
        .predict(&back.window(&x.host()).unwrap())
        .unwrap()
        .as_vec();
    assert_eq!(before, after);

    assert!(matches!(
        Agent::<f32, Cpu>::from_safetensors(&dev, b"junk"),
        Err(AgentError::Checkpoint(_))
    ));
    let bare = agent.params().to_safetensors(&HashMap::new()).unwrap();
    assert!(matches!(
        Agent::<f32, Cpu>::from_safetensors(&dev, &bare),
        Err(AgentError::Checkpoint(_))
    ));
    let as_f64 = Agent::<f64, Cpu>::from_safetensors(&dev, &bytes);
    assert!(
        matches!(as_f64, Err(AgentError::Params(_))),
        "dtype mismatch is reported"
    );
}
