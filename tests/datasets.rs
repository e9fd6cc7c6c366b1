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
