//! The fuzzer: its seed inputs are valid (so mutations start from files the readers
//! accept), its input stream is reproducible, a short run of every target finds
//! nothing, and a finding is reported with its input saved.

use dfdx::prelude::Cpu;
use flowrl::config::Config;
use flowrl::data::import::d4rl::{import_d4rl, D4rlOptions};
use flowrl::data::import::minari::{import_minari, MinariOptions};
use flowrl::data::store;
use flowrl::fuzz::{Corpus, Target};
use flowrl_agents::agent::Agent;

mod common;

const TARGETS: [Target; 5] = [
    Target::Dataset,
    Target::Checkpoint,
    Target::D4rl,
    Target::Minari,
    Target::Config,
];

#[test]
fn seed_inputs_are_accepted_by_their_readers() {
    for target in TARGETS {
        let corpus = Corpus::new(target).unwrap();
        for input in corpus.seeds() {
            let dir = tempfile::tempdir().unwrap();
            input.write(dir.path()).unwrap();
            let bytes = &input.files[0].1;
            let path = dir.path().join(input.files[0].0);
            match target {
                Target::Dataset => drop(store::from_bytes(bytes).unwrap()),
                Target::Checkpoint => {
                    Agent::<f32, Cpu>::from_safetensors(&Cpu::default(), bytes).unwrap();
                }
                Target::D4rl => drop(import_d4rl(&path, &D4rlOptions::default()).unwrap()),
                Target::Minari => {
                    let imported = import_minari(dir.path(), &MinariOptions::default()).unwrap();
                    assert!(imported.dataset.num_episodes() >= 2);
                }
                Target::Config => {
                    let text = std::str::from_utf8(bytes).unwrap();
                    Config::from_toml_str(text, "seed.toml", &[]).unwrap();
                }
            }
        }
    }
}

#[test]
fn the_input_stream_is_reproducible_and_mutated() {
    for target in TARGETS {
        let corpus = Corpus::new(target).unwrap();
        let a: Vec<_> = (0..20).map(|i| corpus.input(5, i)).collect();
        let b: Vec<_> = (0..20).map(|i| corpus.input(5, i)).collect();
        assert_eq!(a, b, "{target:?}");
        let changed = a.iter().filter(|i| !corpus.seeds().contains(i)).count();
        assert!(
            changed >= 15,
            "{target:?}: only {changed} of 20 inputs differ from the seeds"
        );
    }
}

#[test]
fn a_short_run_of_every_target_finds_nothing() {
    for target in ["dataset", "checkpoint", "d4rl", "minari", "config"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("findings");
        let (ok, stdout, stderr) = common::flowrl(
            &[
                "fuzz",
                target,
                "--seconds",
                "3",
                "--seed",
                "11",
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
            &[],
        );
        assert!(ok, "{target}: {stdout}{stderr}");
        assert!(stdout.contains("0 finding(s)"), "{target}: {stdout}");
        assert!(!out.exists(), "{target}: a findings folder was created");
    }
}

/// With a cap smaller than any reader needs, every input is stopped by the
/// allocator: reported as a finding, saved, and the run goes on with the next input.
#[test]
fn an_allocation_above_the_cap_is_a_saved_finding() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("findings");
    let (ok, stdout, stderr) = common::flowrl(
        &[
            "fuzz",
            "config",
            "--seconds",
            "2",
            "--cap",
            "64",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("finding: config seed 0 input 0"),
        "{stderr}"
    );
    assert!(stderr.contains("above the cap of 64 bytes"), "{stderr}");
    assert!(
        stderr.contains("input 1:"),
        "the run stopped after one finding: {stderr}"
    );
    let saved = out.join("config-seed0-input0");
    assert!(saved.join("config.toml").is_file());
    assert!(std::fs::read_to_string(saved.join("finding.txt"))
        .unwrap()
        .contains("above the cap"));
}

/// Findings of the fuzzer, regenerated from their seed and index, stay fixed.
#[test]
fn past_findings_are_errors_now() {
    // A chunk record claiming 4 GiB at an address past the end of a 36 KB file:
    // hdf5-pure sized its buffer by it (an allocation above the 1 GiB cap).
    let input = Corpus::new(Target::Minari).unwrap().input(0, 145_869);
    let dir = tempfile::tempdir().unwrap();
    input.write(dir.path()).unwrap();
    let err = import_minari(dir.path(), &MinariOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("main_data.hdf5"), "{err}");
    assert!(err.contains("beyond the end of the file"), "{err}");

    // `timeouts` declared [8] but read as 4 values: an index out of bounds.
    let input = Corpus::new(Target::D4rl).unwrap().input(1, 345_620);
    let dir = tempfile::tempdir().unwrap();
    input.write(dir.path()).unwrap();
    let path = dir.path().join(input.files[0].0);
    let err = import_d4rl(&path, &D4rlOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`timeouts`: expected 8 values"), "{err}");
}
