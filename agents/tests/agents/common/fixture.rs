//! The reference fixtures of the workspace's `tests/fixtures/`: where they live, how a
//! folder of them is scanned, and the typed model fixture ([`ModelFixture`], the layout
//! of `decision_flowformer/dt_flowformer_tiny_model.json`) that both the test-built
//! parity model and the agents load.

use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind};
use flowrl_agents::device::ModelDevice;
use flowrl_agents::params::ParamStore;
use serde_json::Value;

use super::from_f64;
use super::inputs::HostInputs;

/// `tests/fixtures/<rel>` of the workspace.
pub fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

/// The repository's model fixture.
pub fn repo_model_fixture() -> PathBuf {
    fixture_path("decision_flowformer/dt_flowformer_tiny_model.json")
}

/// The JSON document at `path`.
pub fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
}

/// The `*.json` files of `dir`, sorted.
pub fn json_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The numbers of a JSON array.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Parameters of the reference model that flowrl's agent leaves out: GPT-2's unused
/// token table and the state/return heads, none of which enters the loss.
pub fn left_out(name: &str) -> bool {
    name == "transformer.wte.weight"
        || name.starts_with("predict_state.")
        || name.starts_with("predict_return.")
}

/// One reference model fixture (the layout of `dt_flowformer_tiny_model.json`).
pub struct ModelFixture {
    pub path: PathBuf,
    pub json: Value,
}

impl ModelFixture {
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(Self {
            path: path.to_path_buf(),
            json: read_json(path)?,
        })
    }

    /// The repository's fixture.
    pub fn repo() -> Self {
        Self::load(&repo_model_fixture()).expect("repository fixture")
    }

    /// Whether the document holds model parameters and a training check.
    pub fn is_model(&self) -> bool {
        self.json.get("params").is_some() && self.json.get("training_check").is_some()
    }

    pub fn get(&self, path: &[&str]) -> &Value {
        path.iter().fold(&self.json, |v, k| &v[*k])
    }

    pub fn values(&self, path: &[&str]) -> Vec<f64> {
        floats(self.get(path))
    }

    pub fn cfg_usize(&self, key: &str) -> usize {
        self.json["config"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: config.{key} is not an integer", self.path.display()))
            as usize
    }

    pub fn cfg_f64(&self, key: &str) -> f64 {
        self.json["config"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: config.{key} is not a number", self.path.display()))
    }

    /// `(name, shape, values)` of every reference parameter, in the fixture's order.
    pub fn params(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
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

    /// `(name, gradient)` of every reference parameter (float64), in the fixture's order.
    pub fn grads(&self) -> Vec<(String, Vec<f64>)> {
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

    /// Sets every parameter of `store` from the fixture: the store holds exactly the
    /// fixture's parameters, under the same names and shapes.
    pub fn load_store<E>(&self, store: &mut ParamStore<E, Cpu>)
    where
        E: Dtype + num_traits::Float,
        Cpu: Device<E>,
    {
        let params = self.params();
        assert_eq!(
            params.len(),
            store.len(),
            "the store holds every fixture parameter"
        );
        for (name, shape, values) in params {
            let id = store.id(&name).unwrap();
            assert_eq!(store.shape(id), shape.as_slice(), "{name}");
            store.set_values(&name, &from_f64::<E>(&values)).unwrap();
        }
    }

    /// The agent config of the fixture's model (dropout off, as the fixture ran).
    pub fn agent_config(&self, kind: AgentKind) -> AgentConfig {
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

    /// Loads every agent parameter from the fixture (names one to one, same shapes);
    /// the fixture's other parameters must be the [`left_out`] ones.
    pub fn load_agent<E>(&self, agent: &mut Agent<E, Cpu>)
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
                    store.set_values(&name, &from_f64::<E>(&values)).unwrap();
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

    /// The fixture's input batch.
    pub fn host_inputs(&self) -> HostInputs<f64> {
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

/// The model fixtures to check: every `*.json` file with model parameters in `dir`.
pub fn model_fixtures_in(dir: &Path) -> Result<Vec<ModelFixture>, String> {
    let mut found = Vec::new();
    for path in json_files(dir)? {
        let fx = ModelFixture::load(&path)?;
        if fx.is_model() {
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
pub fn all_model_fixtures() -> Vec<ModelFixture> {
    let mut all = vec![ModelFixture::repo()];
    if let Some(dir) = std::env::var_os("FLOWRL_MODEL_FIXTURES") {
        all.extend(model_fixtures_in(Path::new(&dir)).expect("FLOWRL_MODEL_FIXTURES"));
    }
    assert!(!all.is_empty(), "no model fixture found");
    all
}
