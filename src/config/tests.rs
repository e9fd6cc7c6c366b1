use std::path::Path;

use super::*;
use flowrl_agents::named::Named;

const COLLECT: &str = "[dataset]\nenv = \"Pendulum-v1\"\ntier = \"medium-expert\"\n";

fn parse(text: &str, sets: &[&str]) -> Result<Config, ConfigError> {
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Config::from_toml_str(text, "test.toml", &overrides)
}

#[test]
fn defaults_are_the_original_decision_transformer() {
    let c = Config::default();
    assert_eq!(c.agent.kind, AgentKind::DecisionFlowformer);
    assert_eq!(
        (
            c.agent.context,
            c.agent.width,
            c.agent.layers,
            c.agent.heads
        ),
        (20, 128, 3, 1)
    );
    assert_eq!(c.agent.dropout, 0.1);
    assert_eq!(c.agent.context_mode, ContextMode::Window);
    assert_eq!(c.agent.flow_clamp, 10.0);
    assert_eq!((c.train.lr, c.train.weight_decay), (1e-4, 1e-4));
    assert_eq!((c.train.warmup_steps, c.train.batch), (10_000, 64));
    assert_eq!((c.train.grad_clip, c.train.reward_scale), (0.25, 1000.0));
    assert_eq!(c.train.gamma, 1.0);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("`dataset`: set either"), "{err}");
    let mut ready = c.clone();
    ready.dataset.env = Some("CartPole-v1".into());
    ready.dataset.tier = Some("expert".into());
    ready.validate().unwrap();
    ready.agent.heads = 0;
    let err = ready.validate().unwrap_err().to_string();
    assert!(
        err.contains("`agent.heads`: expected an integer >= 1, found 0"),
        "{err}"
    );
}

#[test]
fn a_minimal_file_takes_every_default() {
    let c = parse(COLLECT, &[]).unwrap();
    let mut want = Config::default();
    want.dataset.env = Some("Pendulum-v1".into());
    want.dataset.tier = Some("medium-expert".into());
    assert_eq!(c, want);
    assert_eq!(
        c.dataset_source().unwrap(),
        DatasetSource::Collect {
            env: "Pendulum-v1".into(),
            tier: "medium-expert".into(),
            episodes: DEFAULT_COLLECT_EPISODES,
            seed: 0
        }
    );
    assert_eq!(c.eval_context_mode(), ContextMode::Window);
}

#[test]
fn unknown_key_names_the_dotted_key_its_line_and_the_valid_keys() {
    let text = format!("{COLLECT}\n[agent]\nwidth = 64\nwidht = 3\n");
    let err = parse(&text, &[]).unwrap_err();
    let shown = err.to_string();
    match err {
        ConfigError::Key {
            key,
            location,
            message,
            origin,
        } => {
            assert_eq!(key, "agent.widht");
            assert_eq!(location, KeySource::Line(7));
            assert_eq!(origin, "test.toml");
            assert!(message.contains("valid keys in [agent]"), "{message}");
            assert!(message.contains("width") && message.contains("flow_clamp"));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(shown.starts_with("test.toml: `agent.widht` (line 7): unknown key"));
}

#[test]
fn unknown_top_level_key_and_section_are_rejected() {
    let err = parse(&format!("sed = 3\n{COLLECT}"), &[]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("`sed` (line 1)"), "{shown}");
    assert!(shown.contains("valid keys at the top level"), "{shown}");
    assert!(shown.contains("seed") && shown.contains("eval"), "{shown}");

    let err = parse(&format!("{COLLECT}[training]\nsteps = 3\n"), &[]).unwrap_err();
    assert!(
        err.to_string().contains("`training` (line 4): unknown key"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_key_the_expected_and_the_found() {
    let err = parse(&format!("{COLLECT}[agent]\nwidth = \"wide\"\n"), &[]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("`agent.width` (line 5)"), "{shown}");
    assert!(shown.contains("string \"wide\""), "{shown}");
    assert!(shown.contains("expected an integer >= 0"), "{shown}");

    let err = parse(&format!("{COLLECT}[train]\nlr = true\n"), &[]).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("`train.lr`") && shown.contains("expected a number"),
        "{shown}"
    );

    let err = parse(&format!("{COLLECT}[agent]\nwidth = -4\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("-4"), "{err}");
}

#[test]
fn unknown_agent_kind_lists_the_kinds() {
    let err = parse(&format!("{COLLECT}[agent]\nkind = \"gpt\"\n"), &[]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("`agent.kind` (line 5)"), "{shown}");
    assert!(
        shown.ends_with(
            "expected an agent kind `decision-flowformer` | `decision-transformer` | `mlp-bc`, \
             found `gpt`"
        ),
        "{shown}"
    );
    let err = parse(&format!("{COLLECT}[agent]\ncontext_mode = 3\n"), &[]).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("`agent.context_mode` (line 5): invalid type: integer `3`"),
        "{shown}"
    );
    let names = AgentKind::names();
    for (i, name) in names.iter().enumerate() {
        let kind: AgentKind = name.parse().unwrap();
        assert_eq!(kind.to_string(), *name);
        assert_eq!(names.iter().position(|n| n == name), Some(i));
    }
    assert_eq!("episode".parse(), Ok(ContextMode::Episode));
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = parse("seed = 1\n[agent\nwidth = 3\n", &[]).unwrap_err();
    match &err {
        ConfigError::Syntax { line, origin, .. } => {
            assert_eq!(*line, 2);
            assert_eq!(origin, "test.toml");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().starts_with("test.toml:2:"), "{err}");
}

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let text = "seed = 1\n[dataset]\nenv = \"Pendulum-v1\"\ntier = \"great\"\nepisodes = 0\n\
                [agent]\nwidth = 100\nheads = 3\ndropout = 1.0\ncontext = 0\nflow_clamp = -1.0\n\
                [train]\nlr = 0.0\ngamma = 1.5\nbatch = 0\nadam_betas = [0.9, 1.0]\n\
                [eval]\ntargets = [100.0, nan]\n";
    let err = parse(text, &[]).unwrap_err();
    let ConfigError::Invalid { problems, origin } = &err else {
        panic!("wrong error {err:?}");
    };
    assert_eq!(origin, "test.toml");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "dataset.tier",
            "dataset.episodes",
            "agent.width",
            "agent.dropout",
            "agent.context",
            "agent.flow_clamp",
            "train.batch",
            "train.lr",
            "train.adam_betas[1]",
            "train.gamma",
            "eval.targets[1]",
        ]
    );
    assert_eq!(problems[0].location, KeySource::Line(4));
    assert_eq!(problems[8].location, KeySource::Line(16));
    let shown = err.to_string();
    assert!(
        shown.contains("`agent.width` (line 7): expected a multiple of agent.heads = 3, found 100")
    );
    assert!(shown.contains("`agent.dropout` (line 9): expected a number in [0, 1), found 1"));
    assert!(shown.contains("found `great`"), "{shown}");
}

#[test]
fn dataset_needs_exactly_one_source() {
    let both = "[dataset]\npath = \"d.safetensors\"\nenv = \"Pendulum-v1\"\ntier = \"medium\"\n";
    let err = parse(both, &[]).unwrap_err().to_string();
    assert!(err.contains("found both"), "{err}");
    let err = parse("seed = 3\n", &[]).unwrap_err().to_string();
    assert!(
        err.contains("`dataset`") && err.contains("found neither"),
        "{err}"
    );
    let stray = "[dataset]\npath = \"d.safetensors\"\nepisodes = 10\n";
    let err = parse(stray, &[]).unwrap_err().to_string();
    assert!(
        err.contains("`dataset.episodes` (line 3): only applies"),
        "{err}"
    );
    let c = parse("[dataset]\npath = \"d.safetensors\"\n", &[]).unwrap();
    assert_eq!(
        c.dataset_source().unwrap(),
        DatasetSource::File("d.safetensors".into())
    );
    let err = parse("[dataset]\nenv = \"Pendulum-v1\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dataset.tier`: required"), "{err}");
}

#[test]
fn overrides_set_values_of_every_type() {
    let c = parse(
        COLLECT,
        &[
            "train.lr=3e-4",
            "agent.kind=mlp-bc",
            "agent.heads = 4",
            "eval.targets=[500, -20.5]",
            "eval.context_mode=\"episode\"",
            "train.delayed_reward=true",
            "dataset.tier=expert",
            "seed=7",
        ],
    )
    .unwrap();
    assert_eq!(c.train.lr, 3e-4);
    assert_eq!(c.agent.kind, AgentKind::MlpBc);
    assert_eq!(c.agent.heads, 4);
    assert_eq!(c.eval.targets, vec![500.0, -20.5]);
    assert_eq!(c.eval_context_mode(), ContextMode::Episode);
    assert!(c.train.delayed_reward);
    assert_eq!(c.dataset.tier.as_deref(), Some("expert"));
    assert_eq!(c.seed, 7);
    let o: Override = "dataset.path=runs/a b.safetensors".parse().unwrap();
    assert_eq!(o.key(), "dataset.path");
    assert_eq!(
        o.value().and_then(|v| v.as_str()),
        Some("runs/a b.safetensors")
    );
    let switched = parse(
        COLLECT,
        &[
            "dataset.env=",
            "dataset.tier= ",
            "dataset.path=d.safetensors",
        ],
    )
    .unwrap();
    assert_eq!(
        switched.dataset_source().unwrap(),
        DatasetSource::File("d.safetensors".into())
    );
}

#[test]
fn override_errors_name_the_argument_and_the_valid_keys() {
    let err = parse(COLLECT, &["agent.widht=3"]).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("`agent.widht` (from --set agent.widht=3): unknown key; valid keys in [agent]: kind, width"),
        "{shown}"
    );
    let err = parse(COLLECT, &["agent.width=3.5"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(from --set agent.width=3.5)") && err.contains("3.5"),
        "{err}"
    );
    let err = parse(COLLECT, &["agent.heads=3"]).unwrap_err().to_string();
    assert!(
        err.contains("`agent.width`: expected a multiple of agent.heads = 3, found 128"),
        "{err}"
    );
    let err = parse(
        &format!("{COLLECT}[agent]\nwidth = 64\n"),
        &["agent.width.x=3"],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("--set agent.width.x=3: `agent.width` holds a value (integer)"),
        "{err}"
    );

    for bad in ["agent.width", "agent..width=3", "=3", "agent.wi dth=3"] {
        let err = bad.parse::<Override>().unwrap_err();
        assert!(
            matches!(&err, ConfigError::Override { arg, .. } if arg == bad),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn round_trip_through_toml_is_exact() {
    let mut c = Config {
        seed: 42,
        ..Config::default()
    };
    c.dataset.path = Some("data/pendulum.safetensors".into());
    c.agent.kind = AgentKind::DecisionTransformer;
    c.agent.context_mode = ContextMode::Episode;
    c.agent.max_episode_length = 200;
    c.train.lr = 3.3e-7;
    c.train.grad_clip = 0.0;
    c.train.adam_betas = [0.85, 0.9995];
    c.train.init_from = Some("runs/short/checkpoints/step-500".into());
    c.eval.env = Some("Pendulum-v1".into());
    c.eval.targets = vec![-150.25, -300.0];
    c.eval.context_mode = Some(ContextMode::Window);
    let text = c.to_toml_string().unwrap();
    assert_eq!(parse(&text, &[]).unwrap(), c, "{text}");

    let collected = parse(COLLECT, &[]).unwrap();
    let text = collected.to_toml_string().unwrap();
    assert_eq!(parse(&text, &[]).unwrap(), collected, "{text}");
    // An absent `train.init_from` is not written: configs recorded before the key
    // existed read back equal.
    assert!(!text.contains("init_from"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/config.toml");
    c.save(&path).unwrap();
    assert_eq!(Config::load(&path, &[] as &[&str]).unwrap(), c);
}

#[test]
fn load_names_the_file_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exp.toml");
    let err = Config::load(&path, &[] as &[&str]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("exp.toml"), "{err}");

    std::fs::write(&path, format!("{COLLECT}[agent]\ndropout = 2.0\n")).unwrap();
    let err = Config::load(&path, &["train.steps=0"])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert!(err.contains("`agent.dropout` (line 5)"), "{err}");
    assert!(
        err.contains("`train.steps` (from --set train.steps=0)"),
        "{err}"
    );

    let err = Config::load(&path, &["nokey"]).unwrap_err().to_string();
    assert!(err.contains("--set nokey: expected key=value"), "{err}");
}

#[test]
fn every_ready_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for dir in [root.clone(), root.join("long-memory")] {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config = Config::load(&path, &[] as &[&str])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let text = config.to_toml_string().unwrap();
                assert_eq!(parse(&text, &[]).unwrap(), config);
                found.push(path);
            }
        }
        assert!(!found.is_empty(), "no *.toml found in {}", dir.display());
    }
}

#[test]
fn ready_configs_hold_the_published_values() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let dt = Config::load(&dir.join("dt-pendulum.toml"), &[] as &[&str]).unwrap();
    let want = Config {
        dataset: dt.dataset.clone(),
        eval: dt.eval.clone(),
        ..Config::default()
    };
    assert_eq!(
        dt, want,
        "dt-pendulum.toml must keep the original DT values"
    );
    assert!(matches!(
        dt.dataset_source().unwrap(),
        DatasetSource::Collect { ref env, ref tier, .. } if env == "Pendulum-v1" && tier == "medium-expert"
    ));

    let paper = Config::load(&dir.join("flowformer-paper-pendulum.toml"), &[] as &[&str]).unwrap();
    assert_eq!((paper.agent.width, paper.agent.heads), (256, 4));
    assert_eq!(paper.train.lr, 1e-3);
    assert_eq!(paper.agent.kind, AgentKind::DecisionFlowformer);
    assert_eq!(paper.dataset, dt.dataset);
}

#[test]
fn readme_lists_every_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/README.md"))
            .unwrap();
    let mut full = Config {
        dataset: DatasetConfig {
            path: Some("d".into()),
            env: Some("e".into()),
            tier: Some("t".into()),
            episodes: Some(1),
            seed: Some(1),
        },
        ..Config::default()
    };
    full.eval.env = Some("e".into());
    full.eval.context_mode = Some(ContextMode::Window);
    let table: toml::Table = full.to_toml_string().unwrap().parse().unwrap();
    let mut missing = Vec::new();
    for (key, value) in &table {
        match value.as_table() {
            Some(section) => {
                assert!(
                    readme.contains(&format!("### `[{key}]`")),
                    "section [{key}]"
                );
                let start = readme.find(&format!("### `[{key}]`")).unwrap();
                let body = &readme[start..];
                let end = body[4..].find("### ").map_or(body.len(), |e| e + 4);
                for name in section.keys() {
                    if !body[..end].contains(&format!("| `{name}` |")) {
                        missing.push(format!("{key}.{name}"));
                    }
                }
            }
            None if !readme.contains(&format!("| `{key}` |")) => missing.push(key.clone()),
            None => {}
        }
    }
    assert!(missing.is_empty(), "configs/README.md lacks {missing:?}");
}

#[test]
fn tier_names_are_every_tier_of_the_environments() {
    let names: Vec<&str> = flowrl_envs::Tier::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(crate::config::TIERS.to_vec(), names);
}
