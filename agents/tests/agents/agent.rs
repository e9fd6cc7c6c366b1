//! The agent's interface: config validation and serde, window validation with errors
//! naming the input, and checkpoints that rebuild the agent from its config.

use std::collections::HashMap;

use dfdx::prelude::*;
use flowrl_agents::agent::{
    ActionSpace, Agent, AgentConfig, AgentError, AgentKind, HostActions, CONFIG_KEY,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::inputs::{random_inputs, small, HostInputs, CONTINUOUS, DISCRETE};

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
