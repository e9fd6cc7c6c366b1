//! End-to-end tests of the data layer: native store, D4RL and Minari importers
//! (on files written by real h5py / minari, see tests/data/make_fixtures.py), bad
//! input, statistics, training windows, and the `flowrl dataset` / `flowrl collect`
//! commands.

use std::path::{Path, PathBuf};

use flowrl::data::import::d4rl::{import_d4rl, D4rlOptions, Trailing};
use flowrl::data::import::minari::{import_minari, MinariOptions};
use flowrl::data::{
    store, Actions, Dataset, DatasetBuilder, Ending, Metadata, Problem, Provenance,
    ReferenceReturns, Space,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// A small continuous dataset: episodes of the given lengths, obs 3-dim, actions 2-dim,
/// step `i` has observation `[i, -i, 0.5]`, action `[i/10, 1]`, reward `i`.
fn synthetic(lengths: &[usize]) -> Dataset {
    let mut b = DatasetBuilder::new(3, 2, false);
    let mut i = 0.0f32;
    for (e, &len) in lengths.iter().enumerate() {
        for _ in 0..len {
            b.push_continuous(&[i, -i, 0.5], &[i / 10.0, 1.0], i);
            i += 1.0;
        }
        b.end_episode(if e % 2 == 0 {
            Ending::Terminated
        } else {
            Ending::Truncated
        });
    }
    b.build(Metadata {
        env_id: "Synthetic-v0".into(),
        observation_space: Space::Box {
            low: vec![f32::NEG_INFINITY, -100.0, 0.0],
            high: vec![f32::INFINITY, 100.0, 1.0],
        },
        action_space: Space::unbounded(2),
        provenance: Provenance {
            source: "test".into(),
            behaviour_policy: Some("counter".into()),
            tier: Some("medium".into()),
            seed: Some(7),
            episodes: lengths.len(),
            origin: None,
            behaviour_set: None,
        },
        reference_returns: Some(ReferenceReturns {
            random: 0.0,
            expert: 100.0,
        }),
    })
    .unwrap()
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.meta(), b.meta());
    assert_eq!(a.observations(), b.observations());
    assert_eq!(a.actions(), b.actions());
    assert_eq!(a.rewards(), b.rewards());
    assert_eq!(a.terminated(), b.terminated());
    assert_eq!(a.truncated(), b.truncated());
    assert_eq!(a.episode_offsets(), b.episode_offsets());
}

#[test]
fn native_file_round_trips_continuous_and_discrete() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic(&[4, 3, 5]);
    let path = dir.path().join("c.safetensors");
    store::save(&ds, &path).unwrap();
    assert_same(&ds, &store::load(&path).unwrap());

    let mut b = DatasetBuilder::new(2, 1, true);
    for i in 0..7 {
        b.push_discrete(&[i as f32, 1.0], i % 3, 1.0);
        if i == 2 {
            b.end_episode(Ending::Terminated);
        }
    }
    b.end_episode(Ending::Truncated);
    let mut meta = ds.meta().clone();
    meta.observation_space = Space::unbounded(2);
    meta.action_space = Space::Discrete { n: 3 };
    meta.reference_returns = None;
    let discrete = b.build(meta).unwrap();
    let path = dir.path().join("d.safetensors");
    store::save(&discrete, &path).unwrap();
    let back = store::load(&path).unwrap();
    assert_same(&discrete, &back);
    assert_eq!(
        back.actions(),
        &Actions::Discrete {
            values: vec![0, 1, 2, 0, 1, 2, 0]
        }
    );
    // Only the finished file is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn d4rl_import_splits_episodes_by_flags() {
    let imported = import_d4rl(&fixture("d4rl_basic.hdf5"), &D4rlOptions::default()).unwrap();
    let ds = &imported.dataset;
    assert_eq!(ds.len(), 12);
    assert_eq!(ds.obs_dim(), 3);
    assert_eq!(ds.episode_offsets(), &[0, 4, 7, 10, 12]);
    // Terminal at 3; timeout at 6; both at 9 counts as terminated; trailing kept.
    let ends: Vec<(bool, bool)> = (0..4)
        .map(|e| {
            let last = ds.episode(e).end - 1;
            (ds.terminated()[last], ds.truncated()[last])
        })
        .collect();
    assert_eq!(
        ends,
        vec![(true, false), (false, true), (true, false), (false, true)]
    );
    assert_eq!(ds.observation(5), &[5.0, 5.25, -5.0]);
    match ds.actions() {
        Actions::Continuous { dim, values } => {
            assert_eq!(*dim, 2);
            assert_eq!(&values[2 * 7..2 * 8], &[0.7f32, -0.7]);
        }
        other => panic!("expected continuous actions, got {other:?}"),
    }
    assert_eq!(ds.rewards()[11], 11.0);
    assert_eq!(ds.meta().env_id, "d4rl_basic");
    assert_eq!(ds.meta().provenance.source, "d4rl");
    assert_eq!(
        ds.meta().provenance.behaviour_policy.as_deref(),
        Some("SAC")
    );
    let warnings = imported.warnings.join("\n");
    assert!(warnings.contains("last 2 step(s)"), "{warnings}");
    assert!(warnings.contains("kept"), "{warnings}");
    assert!(warnings.contains("1 step(s) flagged both"), "{warnings}");
    for name in ["next_observations", "infos/qpos", "metadata/algorithm"] {
        assert!(
            imported.ignored.iter().any(|i| i.starts_with(name)),
            "{name} not reported in {:?}",
            imported.ignored
        );
    }

    let opts = D4rlOptions {
        trailing: Trailing::Drop,
        env_id: Some("hopper-medium-v2".into()),
        ..D4rlOptions::default()
    };
    let dropped = import_d4rl(&fixture("d4rl_basic.hdf5"), &opts).unwrap();
    assert_eq!(dropped.dataset.episode_offsets(), &[0, 4, 7, 10]);
    assert!(dropped.warnings.join("\n").contains("dropped"));
    let refs = dropped.dataset.meta().reference_returns.unwrap();
    assert_eq!((refs.random, refs.expert), (-20.272305, 3234.3));
    // flowrl's own environments have known reference returns too.
    let opts = D4rlOptions {
        env_id: Some("Pendulum-v1".into()),
        ..D4rlOptions::default()
    };
    let pendulum = import_d4rl(&fixture("d4rl_basic.hdf5"), &opts).unwrap();
    let known = flowrl_envs::reference_returns("Pendulum-v1").unwrap();
    assert_eq!(
        pendulum.dataset.meta().reference_returns,
        Some(ReferenceReturns {
            random: known.random,
            expert: known.expert
        })
    );
}

#[test]
fn d4rl_import_reads_column_f64_rewards_and_gzip_chunks() {
    let imported = import_d4rl(
        &fixture("d4rl_rewards_col_f64.hdf5"),
        &D4rlOptions::default(),
    )
    .unwrap();
    let ds = &imported.dataset;
    assert_eq!(ds.episode_offsets(), &[0, 5, 10]);
    assert!(ds.truncated()[4] && ds.truncated()[9]);
    let expected: Vec<f32> = (0..10).map(|i| i as f32 * 0.5).collect();
    assert_eq!(ds.rewards(), expected.as_slice());
    assert_eq!(ds.observation(3), &[3.0, 6.0]);
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
}

#[test]
fn d4rl_import_reads_integer_actions_as_discrete() {
    let imported = import_d4rl(&fixture("d4rl_discrete.hdf5"), &D4rlOptions::default()).unwrap();
    let ds = &imported.dataset;
    assert_eq!(ds.meta().action_space, Space::Discrete { n: 3 });
    assert_eq!(
        ds.actions(),
        &Actions::Discrete {
            values: vec![0, 1, 2, 0, 1, 2, 0, 1]
        }
    );
    assert_eq!(ds.episode_offsets(), &[0, 5, 8]);
    assert!(ds.episode_terminated(0) && !ds.episode_terminated(1));
}

#[test]
fn d4rl_import_without_timeouts_uses_the_maximum_episode_length() {
    let opts = D4rlOptions {
        max_episode_steps: Some(4),
        ..D4rlOptions::default()
    };
    let imported = import_d4rl(&fixture("d4rl_no_timeouts.hdf5"), &opts).unwrap();
    let ds = &imported.dataset;
    assert_eq!(ds.episode_offsets(), &[0, 3, 7, 10]);
    assert!(ds.terminated()[2]);
    assert!(ds.truncated()[6]);
    let warnings = imported.warnings.join("\n");
    assert!(warnings.contains("no `timeouts`"), "{warnings}");
    assert!(warnings.contains("cut at 4 steps"), "{warnings}");
    assert!(warnings.contains("last 3 step(s)"), "{warnings}");

    let default = import_d4rl(&fixture("d4rl_no_timeouts.hdf5"), &D4rlOptions::default()).unwrap();
    assert_eq!(default.dataset.episode_offsets(), &[0, 3, 10]);
    assert!(default.warnings.join("\n").contains("1000"));
}

#[derive(serde::Deserialize)]
struct ExpectedEpisode {
    length: usize,
    #[serde(rename = "return")]
    ret: f64,
    terminated: bool,
    first_observation: Vec<f32>,
    last_observation: Vec<f32>,
    first_action: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Expected {
    episodes: Vec<ExpectedEpisode>,
}

fn check_minari(ds: &Dataset, expected: &Expected) {
    assert_eq!(ds.num_episodes(), expected.episodes.len());
    let returns = ds.episode_returns();
    for (e, want) in expected.episodes.iter().enumerate() {
        let steps = ds.episode(e);
        assert_eq!(steps.len(), want.length, "episode {e}");
        assert!((returns[e] - want.ret).abs() < 1e-4, "episode {e}");
        assert_eq!(ds.episode_terminated(e), want.terminated, "episode {e}");
        assert_eq!(
            ds.observation(steps.start),
            want.first_observation.as_slice()
        );
        // The final observation (one more row than actions) is dropped.
        assert_eq!(
            ds.observation(steps.end - 1),
            want.last_observation.as_slice()
        );
        match ds.actions() {
            Actions::Continuous { dim, values } => assert_eq!(
                &values[steps.start * dim..(steps.start + 1) * dim],
                want.first_action.as_slice()
            ),
            Actions::Discrete { values } => {
                assert_eq!(values[steps.start] as f32, want.first_action[0])
            }
        }
    }
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn minari_import_reads_discrete_cartpole() {
    let imported = import_minari(&fixture("minari_cartpole"), &MinariOptions::default()).unwrap();
    let ds = &imported.dataset;
    check_minari(ds, &expected("minari_cartpole"));
    assert_eq!(ds.meta().env_id, "CartPole-v1");
    assert_eq!(ds.meta().action_space, Space::Discrete { n: 2 });
    match &ds.meta().observation_space {
        Space::Box { low, high } => {
            assert_eq!(low.len(), 4);
            assert_eq!(low[1], f32::NEG_INFINITY);
            assert_eq!(high[3], f32::INFINITY);
            assert!((high[0] - 4.8).abs() < 1e-6);
        }
        other => panic!("expected a Box, got {other:?}"),
    }
    assert_eq!(ds.meta().reference_returns, None);
    assert!(matches!(ds.actions(), Actions::Discrete { .. }));
}

#[test]
fn minari_import_reads_continuous_pendulum_with_reference_scores() {
    // The `data` folder and the HDF5 file itself are accepted as well.
    for path in [
        fixture("minari_pendulum"),
        fixture("minari_pendulum").join("data"),
        fixture("minari_pendulum")
            .join("data")
            .join("main_data.hdf5"),
    ] {
        let imported = import_minari(&path, &MinariOptions::default()).unwrap();
        let ds = &imported.dataset;
        check_minari(ds, &expected("minari_pendulum"));
        assert_eq!(ds.meta().env_id, "Pendulum-v1");
        assert_eq!(
            ds.meta().action_space,
            Space::Box {
                low: vec![-2.0],
                high: vec![2.0]
            }
        );
        assert_eq!(
            ds.meta().reference_returns,
            Some(ReferenceReturns {
                random: -1500.0,
                expert: -150.0
            })
        );
        assert_eq!(
            ds.meta().provenance.behaviour_policy.as_deref(),
            Some("random")
        );
    }
}

#[test]
fn imported_datasets_survive_the_native_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import_minari(&fixture("minari_cartpole"), &MinariOptions::default()).unwrap();
    let path = dir.path().join("cartpole.safetensors");
    store::save(&imported.dataset, &path).unwrap();
    assert_same(&imported.dataset, &store::load(&path).unwrap());
}

fn problem_of(
    result: Result<impl std::fmt::Debug, flowrl::data::DataError>,
    path: &Path,
) -> Problem {
    let err = result.unwrap_err();
    assert_eq!(err.path, path, "the error must name the file: {err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    err.problem
}

#[test]
fn bad_hdf5_inputs_fail_with_named_problems() {
    let d4 = |name: &str| {
        let path = fixture(name);
        let p = problem_of(import_d4rl(&path, &D4rlOptions::default()), &path);
        p.to_string()
    };
    assert_eq!(
        d4("d4rl_missing_actions.hdf5"),
        "missing required array `actions`"
    );
    let msg = d4("d4rl_length_mismatch.hdf5");
    assert!(
        msg.contains("`actions`")
            && msg.contains("expected 6 rows")
            && msg.contains("found 5 rows"),
        "{msg}"
    );
    let msg = d4("d4rl_nan.hdf5");
    assert!(
        msg.contains("`observations`") && msg.contains("NaN") && msg.contains("index 7"),
        "{msg}"
    );
    let msg = d4("d4rl_inf_rewards.hdf5");
    assert!(
        msg.contains("`rewards`") && msg.contains("inf") && msg.contains("index 4"),
        "{msg}"
    );
    let msg = d4("d4rl_empty.hdf5");
    assert!(msg.contains("empty"), "{msg}");
    let missing = fixture("no_such_file.hdf5");
    assert!(matches!(
        problem_of(import_d4rl(&missing, &D4rlOptions::default()), &missing),
        Problem::Io(_)
    ));

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.hdf5");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        problem_of(import_d4rl(&empty, &D4rlOptions::default()), &empty),
        Problem::EmptyFile
    ));
    let text = dir.path().join("text.hdf5");
    std::fs::write(&text, b"observations,actions\n1,2\n").unwrap();
    assert!(matches!(
        problem_of(import_d4rl(&text, &D4rlOptions::default()), &text),
        Problem::NotFormat { format: "HDF5", .. }
    ));
    let bytes = std::fs::read(fixture("d4rl_basic.hdf5")).unwrap();
    let cut = dir.path().join("cut.hdf5");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let p = problem_of(import_d4rl(&cut, &D4rlOptions::default()), &cut);
    assert!(matches!(p, Problem::Truncated(_)), "{p}");

    // A Minari folder whose metadata.json is missing or broken.
    let minari = dir.path().join("minari").join("data");
    std::fs::create_dir_all(&minari).unwrap();
    std::fs::copy(
        fixture("minari_cartpole")
            .join("data")
            .join("main_data.hdf5"),
        minari.join("main_data.hdf5"),
    )
    .unwrap();
    let meta = minari.join("metadata.json");
    let err = import_minari(&minari, &MinariOptions::default()).unwrap_err();
    assert_eq!(err.path, meta);
    assert!(matches!(err.problem, Problem::Io(_)));
    std::fs::write(&meta, r#"{"observation_space": "{\"type\": \"Dict\"}"}"#).unwrap();
    let p = problem_of(import_minari(&minari, &MinariOptions::default()), &meta);
    assert!(p.to_string().contains("Dict"), "{p}");
}

#[test]
fn bad_native_files_fail_with_named_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    store::save(&synthetic(&[3, 4]), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, content: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };

    let missing = dir.path().join("missing.safetensors");
    assert!(matches!(
        problem_of(store::load(&missing), &missing),
        Problem::Io(_)
    ));
    let empty = write("empty.safetensors", b"");
    assert!(matches!(
        problem_of(store::load(&empty), &empty),
        Problem::EmptyFile
    ));
    let hdf5 = fixture("d4rl_basic.hdf5");
    assert!(matches!(
        problem_of(store::load(&hdf5), &hdf5),
        Problem::NotFormat {
            format: "safetensors",
            ..
        }
    ));
    for cut_at in [bytes.len() - 3, 40] {
        let cut = write("cut.safetensors", &bytes[..cut_at]);
        let p = problem_of(store::load(&cut), &cut);
        assert!(matches!(p, Problem::Truncated(_)), "cut at {cut_at}: {p}");
    }
}

use flowrl::data::stats::{ActionStats, DatasetInfo, Normalisation, STD_EPS};
use flowrl::data::windows::{
    returns_to_go, RewardMode, Sampler, WindowConfig, WindowError, WindowMode,
};

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn returns_to_go_dense_discounted_and_delayed() {
    // Rewards are the step indices: episode 0 = 0,1,2,3; episode 1 = 4,5,6.
    let ds = synthetic(&[4, 3]);
    let dense = returns_to_go(&ds, 1.0, RewardMode::Dense);
    assert!(
        close(&dense, &[6.0, 6.0, 5.0, 3.0, 15.0, 11.0, 6.0]),
        "{dense:?}"
    );
    let half = returns_to_go(&ds, 0.5, RewardMode::Dense);
    assert!(close(&half[..4], &[1.375, 2.75, 3.5, 3.0]), "{half:?}");
    let delayed = returns_to_go(&ds, 1.0, RewardMode::Delayed);
    assert!(
        close(&delayed, &[6.0, 6.0, 6.0, 6.0, 15.0, 15.0, 15.0]),
        "{delayed:?}"
    );
    let delayed_half = returns_to_go(&ds, 0.5, RewardMode::Delayed);
    assert!(
        close(&delayed_half[..4], &[0.75, 1.5, 3.0, 6.0]),
        "{delayed_half:?}"
    );
}

#[test]
fn normalisation_uses_mean_and_std_plus_epsilon() {
    let ds = synthetic(&[4, 3]);
    let norm = Normalisation::of(&ds, 1.0);
    // Column 0 is 0..=6: mean 3, population std 2. Column 2 is constant 0.5.
    assert!((norm.obs_mean[0] - 3.0).abs() < 1e-6);
    assert!((norm.obs_std[0] - (2.0 + STD_EPS)).abs() < 1e-6);
    assert_eq!(norm.obs_std[2], STD_EPS);
    let mut out = [0.0; 3];
    norm.normalise_into(ds.observation(5), &mut out);
    assert!((out[0] - 1.0).abs() < 1e-5 && (out[1] + 1.0).abs() < 1e-5);
    assert_eq!(out[2], 0.0);
}

fn window_config(context: usize, batch_size: usize, seed: u64) -> WindowConfig {
    WindowConfig {
        context,
        batch_size,
        seed,
        ..WindowConfig::default()
    }
}

#[test]
fn sampled_windows_hold_the_dataset_steps_right_padded() {
    let ds = synthetic(&[4, 3, 10]);
    let cfg = WindowConfig {
        reward_scale: Some(2.0),
        max_episode_len: Some(6),
        ..window_config(5, 32, 3)
    };
    let mut sampler = Sampler::new(&ds, cfg).unwrap();
    let rtg = returns_to_go(&ds, 1.0, RewardMode::Dense);
    let norm = sampler.normalisation().clone();
    assert_eq!(norm.reward_scale, 2.0);
    let mut batch = sampler.new_batch();
    // Dirty the buffers: padding must be rewritten on every batch.
    batch.states.fill(9.0);
    batch.mask.fill(9.0);
    sampler.sample(&mut batch);
    let (k, d) = (5, 3);
    for row in 0..32 {
        let (e, start) = (batch.episodes[row], batch.starts[row]);
        let steps = ds.episode(e);
        assert!(steps.contains(&start));
        let len = (steps.end - start).min(k);
        for j in 0..k {
            let at = row * k + j;
            let state = &batch.states[at * d..(at + 1) * d];
            let action = &batch.actions[at * 2..(at + 1) * 2];
            if j < len {
                let t = start + j;
                let mut want = [0.0; 3];
                norm.normalise_into(ds.observation(t), &mut want);
                assert_eq!(state, want);
                assert_eq!(action, [t as f32 / 10.0, 1.0]);
                assert_eq!(batch.returns_to_go[at], (rtg[t] / 2.0) as f32);
                assert_eq!(batch.timesteps[at], (t - steps.start).min(5));
                assert_eq!(batch.mask[at], 1.0);
            } else {
                assert_eq!(state, [0.0; 3]);
                assert_eq!(action, [0.0; 2]);
                assert_eq!(
                    (batch.returns_to_go[at], batch.timesteps[at], batch.mask[at]),
                    (0.0, 0, 0.0)
                );
            }
        }
    }
}

#[test]
fn sampling_is_seeded_and_proportional_to_episode_length() {
    let ds = synthetic(&[1, 99]);
    let draw = |seed| {
        let mut s = Sampler::new(&ds, window_config(4, 64, seed)).unwrap();
        let mut b = s.new_batch();
        let mut starts = Vec::new();
        for _ in 0..100 {
            s.sample(&mut b);
            starts.extend_from_slice(&b.starts);
        }
        (starts, b)
    };
    let (a, batch_a) = draw(5);
    let (b, batch_b) = draw(5);
    assert_eq!(a, b);
    assert_eq!(batch_a, batch_b);
    assert_ne!(a, draw(6).0);
    // 6400 windows: episode 0 holds 1% of the steps, so about 64 windows start there.
    let short = a.iter().filter(|&&s| s == 0).count();
    assert!(
        (20..=130).contains(&short),
        "{short} windows from the 1-step episode"
    );
    // Starts inside the long episode are uniform: mean offset about 49.
    let long: Vec<f64> = a
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| (s - 1) as f64)
        .collect();
    let mean = long.iter().sum::<f64>() / long.len() as f64;
    assert!((mean - 49.0).abs() < 3.0, "mean start offset {mean}");
}

#[test]
fn whole_episode_windows_start_at_episode_starts() {
    let ds = synthetic(&[4, 3, 10]);
    let err = Sampler::new(
        &ds,
        WindowConfig {
            mode: WindowMode::WholeEpisode,
            ..window_config(8, 4, 0)
        },
    )
    .err();
    assert_eq!(
        err,
        Some(WindowError::ContextTooShort {
            context: 8,
            longest: 10
        })
    );
    let mut sampler = Sampler::new(
        &ds,
        WindowConfig {
            mode: WindowMode::WholeEpisode,
            reward_mode: RewardMode::Delayed,
            ..window_config(12, 16, 1)
        },
    )
    .unwrap();
    let mut batch = sampler.new_batch();
    sampler.sample(&mut batch);
    let mut seen = [false; 3];
    for row in 0..16 {
        let e = batch.episodes[row];
        seen[e] = true;
        let steps = ds.episode(e);
        assert_eq!(batch.starts[row], steps.start);
        let mask = &batch.mask[row * 12..(row + 1) * 12];
        assert_eq!(mask.iter().sum::<f32>() as usize, steps.len());
        assert_eq!(
            &batch.timesteps[row * 12..row * 12 + steps.len()],
            (0..steps.len()).collect::<Vec<_>>()
        );
        // Delayed rewards: the whole return is still ahead at every step.
        let rtg = &batch.returns_to_go[row * 12..row * 12 + steps.len()];
        assert!(rtg.iter().all(|&r| r == rtg[0]));
    }
    assert_eq!(seen, [true; 3]);
}

#[test]
fn sampler_rejects_bad_settings() {
    let ds = synthetic(&[3]);
    let bad = |cfg: WindowConfig| Sampler::new(&ds, cfg).err().unwrap();
    assert_eq!(bad(window_config(0, 4, 0)), WindowError::ZeroContext);
    assert_eq!(bad(window_config(4, 0, 0)), WindowError::ZeroBatch);
    assert_eq!(
        bad(WindowConfig {
            gamma: 1.5,
            ..window_config(4, 4, 0)
        }),
        WindowError::Gamma(1.5)
    );
    assert_eq!(
        bad(WindowConfig {
            reward_scale: Some(0.0),
            ..window_config(4, 4, 0)
        }),
        WindowError::RewardScale(0.0)
    );
    assert_eq!(
        bad(WindowConfig {
            max_episode_len: Some(0),
            ..window_config(4, 4, 0)
        }),
        WindowError::ZeroMaxEpisodeLen
    );
}

#[test]
fn dataset_info_summarises_episodes_scores_and_actions() {
    let info = DatasetInfo::of(&synthetic(&[4, 3]));
    assert_eq!((info.episodes, info.transitions), (2, 7));
    assert_eq!((info.terminated_episodes, info.truncated_episodes), (1, 1));
    assert_eq!(
        (info.episode_length.min, info.episode_length.max),
        (3.0, 4.0)
    );
    assert_eq!(info.episode_return.mean, 10.5);
    assert_eq!(info.episode_return.std, 4.5);
    // Reference returns 0 and 100: the score equals the return.
    assert_eq!(info.normalised_score.unwrap().mean, 10.5);
    assert_eq!(info.observations[2].std, 0.0);
    match &info.actions {
        ActionStats::Continuous(cols) => assert_eq!((cols[1].mean, cols[1].std), (1.0, 0.0)),
        other => panic!("{other:?}"),
    }
    let cartpole = import_minari(&fixture("minari_cartpole"), &MinariOptions::default()).unwrap();
    let info = DatasetInfo::of(&cartpole.dataset);
    match &info.actions {
        ActionStats::Discrete(counts) => assert_eq!(counts.iter().sum::<usize>(), 35),
        other => panic!("{other:?}"),
    }
    assert!(info.normalised_score.is_none());
}

#[test]
fn invalid_datasets_are_rejected_with_the_array_named() {
    let parts = synthetic(&[4, 3]).into_parts();
    let check = |edit: &dyn Fn(&mut flowrl::data::DatasetParts), needle: &str| {
        let mut p = parts.clone();
        edit(&mut p);
        let msg = Dataset::new(p).unwrap_err().to_string();
        assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
    };
    check(&|p| p.terminated.push(false), "`terminated`");
    check(
        &|p| p.observations.pop().map(|_| ()).unwrap_or(()),
        "`observations`",
    );
    check(
        &|p| p.rewards[2] = f32::INFINITY,
        "`rewards` holds a non-finite value (inf) at flat index 2",
    );
    check(
        &|p| p.episode_offsets = vec![0, 5, 4, 7],
        "`episode_offsets`",
    );
    check(
        &|p| p.episode_offsets = vec![0, 4, 6],
        "last offset equal to the number of steps (7)",
    );
    check(
        &|p| p.terminated[1] = true,
        "episode 0: step 1 is flagged terminated",
    );
    check(&|p| p.truncated[3] = true, "both terminated and truncated");
    check(
        &|p| p.meta.action_space = Space::Discrete { n: 2 },
        "`action_space`",
    );
    check(
        &|p| p.meta.observation_space = Space::unbounded(4),
        "`observations`",
    );
    check(
        &|p| {
            p.rewards.clear();
            p.observations.clear();
            p.terminated.clear();
            p.truncated.clear();
            p.actions = Actions::Continuous {
                dim: 2,
                values: vec![],
            };
            p.episode_offsets = vec![0];
        },
        "empty",
    );
}

use flowrl::collect::{collect_dataset, CollectError};
use flowrl_envs::Tier;

#[test]
fn collection_is_seeded_and_records_its_provenance() {
    let mut calls = Vec::new();
    let a = collect_dataset("Pendulum-v1", Tier::Medium, 3, 9, &mut |n| calls.push(n)).unwrap();
    assert_eq!(calls.last(), Some(&3));
    let b = collect_dataset("Pendulum-v1", Tier::Medium, 3, 9, &mut |_| {}).unwrap();
    assert_same(&a, &b);
    let c = collect_dataset("Pendulum-v1", Tier::Medium, 3, 10, &mut |_| {}).unwrap();
    assert_ne!(a.observations(), c.observations());
    assert_eq!(a.num_episodes(), 3);
    assert_eq!(a.obs_dim(), 3);
    let meta = a.meta();
    assert_eq!(meta.env_id, "Pendulum-v1");
    assert_eq!(meta.provenance.tier.as_deref(), Some("medium"));
    assert_eq!(meta.provenance.seed, Some(9));
    assert_eq!(meta.provenance.episodes, 3);
    assert!(meta.reference_returns.is_some());
    assert!(matches!(meta.action_space, Space::Box { .. }));

    let cartpole = collect_dataset("CartPole-v1", Tier::Random, 4, 1, &mut |_| {}).unwrap();
    assert_eq!(cartpole.meta().action_space, Space::Discrete { n: 2 });
    assert!(matches!(cartpole.actions(), Actions::Discrete { .. }));
    assert!((0..4).all(|e| cartpole.episode_terminated(e)));
}

#[test]
fn collection_rejects_unknown_environments_and_zero_episodes() {
    let err = collect_dataset("Nope-v0", Tier::Random, 2, 0, &mut |_| {}).unwrap_err();
    assert!(matches!(err, CollectError::Env(_)));
    assert!(err.to_string().contains("Nope-v0") && err.to_string().contains("CartPole-v1"));
    assert!(matches!(
        collect_dataset("CartPole-v1", Tier::Random, 0, 0, &mut |_| {}),
        Err(CollectError::NoEpisodes)
    ));
}

fn flowrl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_imports_collects_and_describes_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cartpole.safetensors");
    let minari = fixture("minari_cartpole");
    let (ok, stdout, stderr) = flowrl(&[
        "dataset",
        "import",
        "--from",
        "minari",
        minari.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 episodes, 35 transitions"), "{stdout}");
    let (ok, table, stderr) = flowrl(&["dataset", "info", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    for needle in [
        "CartPole-v1",
        "episodes     3",
        "transitions  35",
        "episode return",
        "obs[3]",
        "action 1",
    ] {
        assert!(table.contains(needle), "`{needle}` missing from:\n{table}");
    }

    let d4 = dir.path().join("d4.safetensors");
    let (ok, _, stderr) = flowrl(&[
        "dataset",
        "import",
        "--from",
        "d4rl",
        fixture("d4rl_basic.hdf5").to_str().unwrap(),
        "--out",
        d4.to_str().unwrap(),
        "--trailing",
        "drop",
        "--ref-random",
        "-10",
        "--ref-expert",
        "90",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("dropped"),
        "{stderr}"
    );
    let (ok, json, _) = flowrl(&["dataset", "info", d4.to_str().unwrap(), "--json"]);
    assert!(ok);
    let info: DatasetInfo = serde_json::from_str(&json).unwrap();
    assert_eq!((info.episodes, info.transitions), (3, 10));
    assert_eq!(info.reference_returns, Some((-10.0, 90.0)));
    // Returns 6, 15 and 24 (rewards are the step indices): scores 16, 25, 34.
    assert!((info.normalised_score.unwrap().mean - 25.0).abs() < 1e-9);

    let collected = dir.path().join("pendulum.safetensors");
    let (ok, stdout, stderr) = flowrl(&[
        "collect",
        "--env",
        "Pendulum-v1",
        "--tier",
        "expert",
        "--episodes",
        "2",
        "--seed",
        "4",
        "--out",
        collected.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 episodes, 400 transitions"), "{stdout}");
    let ds = store::load(&collected).unwrap();
    assert_eq!(ds.meta().provenance.tier.as_deref(), Some("expert"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn cli_failures_name_the_file_and_the_problem_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let write = |name: &str, content: &[u8]| {
        let p = inputs.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = write("empty.hdf5", b"");
    let text = write("notes.hdf5", b"not an hdf5 file\n");
    let basic = std::fs::read(fixture("d4rl_basic.hdf5")).unwrap();
    let cut = write("cut.hdf5", &basic[..basic.len() / 3]);
    let good = inputs.join("good.safetensors");
    store::save(&synthetic(&[2, 2]), &good).unwrap();
    let native = std::fs::read(&good).unwrap();
    let cut_native = write("cut.safetensors", &native[..native.len() - 5]);
    let missing = inputs.join("missing.hdf5").to_str().unwrap().to_string();
    let f = |name: &str| fixture(name).to_str().unwrap().to_string();

    let outputs = dir.path().join("outputs");
    let out = outputs.join("out.safetensors");
    let out_s = out.to_str().unwrap();
    let import = |from: &str, path: &str| {
        vec!["dataset", "import", "--from", from, path, "--out", out_s]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let info = |path: &str| vec!["dataset".to_string(), "info".into(), path.into()];
    let collect = |env: &str, tier: &str| {
        [
            "collect",
            "--env",
            env,
            "--tier",
            tier,
            "--episodes",
            "2",
            "--out",
            out_s,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str, Option<String>)> = vec![
        (
            import("d4rl", &missing),
            "cannot read",
            Some(missing.clone()),
        ),
        (import("d4rl", &empty), "empty", Some(empty.clone())),
        (import("d4rl", &text), "not a HDF5 file", Some(text.clone())),
        (import("d4rl", &cut), "truncated", Some(cut.clone())),
        (
            import("d4rl", &f("d4rl_missing_actions.hdf5")),
            "missing required array `actions`",
            Some(f("d4rl_missing_actions.hdf5")),
        ),
        (
            import("d4rl", &f("d4rl_length_mismatch.hdf5")),
            "expected 6 rows",
            Some(f("d4rl_length_mismatch.hdf5")),
        ),
        (
            import("d4rl", &f("d4rl_nan.hdf5")),
            "NaN",
            Some(f("d4rl_nan.hdf5")),
        ),
        (
            import("d4rl", &f("d4rl_inf_rewards.hdf5")),
            "inf",
            Some(f("d4rl_inf_rewards.hdf5")),
        ),
        (
            import("d4rl", &f("d4rl_empty.hdf5")),
            "empty",
            Some(f("d4rl_empty.hdf5")),
        ),
        (
            import("minari", &missing),
            "cannot read",
            Some(missing.clone()),
        ),
        (
            import("minari", inputs.to_str().unwrap()),
            "main_data.hdf5",
            None,
        ),
        (info(&missing), "cannot read", Some(missing.clone())),
        (info(&empty), "empty", Some(empty.clone())),
        (
            info(&f("d4rl_basic.hdf5")),
            "not a safetensors file",
            Some(f("d4rl_basic.hdf5")),
        ),
        (info(&cut_native), "truncated", Some(cut_native.clone())),
        (
            collect("Nope-v0", "expert"),
            "unknown environment id `Nope-v0`",
            None,
        ),
        (
            collect("CartPole-v1", "great"),
            "unknown tier `great`",
            None,
        ),
    ];
    for (args, needle, file) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = flowrl(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` missing from: {stderr}"
        );
        if let Some(file) = file {
            assert!(
                stderr.contains(&file),
                "{args:?}: file not named in: {stderr}"
            );
        }
        let left = std::fs::read_dir(&outputs).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{args:?} left files in the output folder");
    }
}

#[test]
fn cli_errors_are_one_readable_line_without_a_backtrace() {
    let missing = tempfile::tempdir()
        .unwrap()
        .path()
        .join("missing.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(["dataset", "info", missing.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("missing.safetensors"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
