//! A mutation fuzzer on stable Rust for the readers of untrusted input: the native
//! dataset reader, the checkpoint loader, the D4RL and Minari importers and the
//! experiment config loader.
//!
//! Inputs are valid files made at run time ([`seeds`]) with 1 to 4 mutations
//! ([`mutate`]); input `i` of seed `s` is always the same, so a finding is
//! reproduced from its seed and index. A supervisor ([`run`]) starts a worker
//! process (the same binary, `flowrl fuzz <target> --worker-from I`) that runs the
//! inputs in order, each under [`std::panic::catch_unwind`] with the allocation cap
//! of [`crate::allocator`] armed; the worker's available memory
//! ([`crate::limits::MEMORY_LIMIT_VAR`]) is the cap, so what the readers' own size
//! checks let through must fit under it. A panic is reported by the worker and the run goes
//! on; a worker that dies (allocation above the cap, abort, signal) or stops making
//! progress is reported for the input it was on and restarted after it. Each
//! finding's input is saved to a folder of the output directory.

pub mod mutate;
pub mod seeds;

use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dfdx::prelude::Cpu;
use flowrl_agents::agent::Agent;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::data::import::d4rl::{import_d4rl, D4rlOptions};
use crate::data::import::minari::{import_minari, MinariOptions};
use crate::data::stats::DatasetInfo;
use crate::data::store;

/// What is fuzzed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The native dataset reader (`.safetensors` datasets).
    Dataset,
    /// The checkpoint loader: parameters and agent config to an agent.
    Checkpoint,
    /// The D4RL HDF5 importer.
    D4rl,
    /// The Minari importer (`metadata.json` and `main_data.hdf5`).
    Minari,
    /// The experiment config loader (TOML).
    Config,
}

impl Target {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Dataset => "dataset",
            Target::Checkpoint => "checkpoint",
            Target::D4rl => "d4rl",
            Target::Minari => "minari",
            Target::Config => "config",
        }
    }
}

/// One input: the files it consists of, by relative path.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// `(relative path, bytes)` of every file.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

impl Input {
    fn one(name: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            files: vec![(name, bytes)],
        }
    }

    /// Writes the files under `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// A seed input; for the HDF5 targets, also the arrays its HDF5 file (the input's
/// last file) was written from, which the structure-aware mutations edit.
struct Seed {
    input: Input,
    arrays: Option<Vec<seeds::Array>>,
}

impl Seed {
    fn plain(input: Input) -> Self {
        Self {
            input,
            arrays: None,
        }
    }
}

/// The valid inputs of a target and the mutated inputs derived from them.
pub struct Corpus {
    target: Target,
    seeds: Vec<Seed>,
}

impl Corpus {
    /// The seed inputs of `target` (see [`seeds`]).
    pub fn new(target: Target) -> anyhow::Result<Self> {
        let one = |name, bytes| Seed::plain(Input::one(name, bytes));
        let seeds = match target {
            Target::Dataset => vec![
                one("dataset.safetensors", seeds::dataset(false)?),
                one("dataset.safetensors", seeds::dataset(true)?),
            ],
            Target::Checkpoint => seeds::checkpoints()?
                .into_iter()
                .map(|b| one("params.safetensors", b))
                .collect(),
            Target::D4rl => {
                let mut list = Vec::new();
                for arrays in [seeds::d4rl(false), seeds::d4rl(true)] {
                    list.push(Seed {
                        input: Input::one("d4rl.hdf5", seeds::write_h5(&arrays)?),
                        arrays: Some(arrays),
                    });
                }
                list.extend(seeds::H5PY_D4RL.map(|b| one("d4rl.hdf5", b.to_vec())));
                list
            }
            Target::Minari => {
                let arrays = seeds::minari();
                let minari = |meta: Vec<u8>, h5: Vec<u8>| Input {
                    files: vec![("data/metadata.json", meta), ("data/main_data.hdf5", h5)],
                };
                let (meta, h5) = seeds::H5PY_MINARI;
                vec![
                    Seed {
                        input: minari(seeds::minari_metadata()?, seeds::write_h5(&arrays)?),
                        arrays: Some(arrays),
                    },
                    Seed::plain(minari(meta.to_vec(), h5.to_vec())),
                ]
            }
            Target::Config => seeds::configs()?
                .into_iter()
                .map(|b| one("config.toml", b))
                .collect(),
        };
        Ok(Self { target, seeds })
    }

    /// The seed inputs, unmutated.
    pub fn seeds(&self) -> Vec<Input> {
        self.seeds.iter().map(|s| s.input.clone()).collect()
    }

    /// Input `i` of the stream of `seed`: a seed input with its HDF5 arrays edited
    /// (written again), or with 1 to 4 byte-level edits chosen by the file's format,
    /// or both.
    pub fn input(&self, seed: u64, i: u64) -> Input {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let chosen = &self.seeds[rng.gen_range(0..self.seeds.len())];
        let mut input = chosen.input.clone();
        if let Some(arrays) = chosen.arrays.as_ref().filter(|_| rng.gen_bool(0.7)) {
            let mut arrays = arrays.clone();
            for _ in 0..rng.gen_range(1..=3) {
                mutate::arrays(&mut rng, &mut arrays);
            }
            // The writer is not under test: if it refuses or panics, keep the seed file.
            let written = catch_unwind(|| seeds::write_h5(&arrays));
            if let (Ok(Ok(bytes)), Some(last)) = (written, input.files.last_mut()) {
                last.1 = bytes;
            }
            if rng.gen_bool(0.7) {
                return input;
            }
        }
        for _ in 0..rng.gen_range(1..=4) {
            let file = input.files.choose_mut(&mut rng);
            let Some((name, data)) = file else { break };
            match self.target {
                Target::Dataset | Target::Checkpoint if rng.gen_bool(0.6) => {
                    mutate::safetensors(&mut rng, data)
                }
                Target::D4rl | Target::Minari if name.ends_with(".hdf5") => {
                    mutate::hdf5(&mut rng, data)
                }
                Target::Minari | Target::Config if rng.gen_bool(0.8) => {
                    mutate::text_tokens(&mut rng, data)
                }
                _ => mutate::bytes(&mut rng, data),
            }
        }
        input
    }
}

/// Runs one input through the target's reader in `scratch` (a folder for the files
/// the importers read). Rejecting the input with an error is a correct outcome; what
/// the fuzzer looks for is a panic, an abort, an allocation above the cap or a hang.
/// `Err` means the scratch files could not be written (not a finding).
pub fn run_input(target: Target, input: &Input, scratch: &Path) -> anyhow::Result<()> {
    let first = &input.files[0].1;
    match target {
        Target::Dataset => {
            if let Ok(ds) = store::from_bytes(first) {
                DatasetInfo::of(&ds);
            }
        }
        Target::Checkpoint => {
            let _ = Agent::<f32, Cpu>::from_safetensors(&Cpu::default(), first);
        }
        Target::D4rl => {
            input.write(scratch)?;
            let path = scratch.join(input.files[0].0);
            if let Ok(imported) = import_d4rl(&path, &D4rlOptions::default()) {
                DatasetInfo::of(&imported.dataset);
            }
        }
        Target::Minari => {
            input.write(scratch)?;
            if let Ok(imported) = import_minari(scratch, &MinariOptions::default()) {
                DatasetInfo::of(&imported.dataset);
            }
        }
        Target::Config => {
            let text = String::from_utf8_lossy(first);
            if let Ok(config) = Config::from_toml_str(&text, "fuzz.toml", &[]) {
                let _ = config.to_toml_string();
            }
        }
    }
    Ok(())
}

/// Default allocation cap of a fuzzed input: 1 GiB.
pub const DEFAULT_CAP: usize = 1 << 30;

/// A worker that makes no progress for this long is reported as hung.
const HANG: Duration = Duration::from_secs(20);

/// The worker side: runs inputs `from, from + 1, ...` of `seed` until `until`,
/// writing `start <i>` before each input and `panic <i> <message>` after a panic to
/// stdout, then `done <next>`.
pub fn worker(
    target: Target,
    seed: u64,
    from: u64,
    until: Instant,
    cap: usize,
) -> anyhow::Result<()> {
    let corpus = Corpus::new(target)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    std::panic::set_hook(Box::new(|_| {}));
    let mut out = std::io::stdout().lock();
    let mut i = from;
    while Instant::now() < until {
        let input = corpus.input(seed, i);
        writeln!(out, "start {i}")?;
        out.flush()?;
        crate::allocator::arm_cap(Some(cap));
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_input(target, &input, scratch.path())
        }));
        crate::allocator::arm_cap(None);
        match result {
            Ok(ran) => ran?,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                writeln!(out, "panic {i} {}", message.replace('\n', " "))?;
            }
        }
        i += 1;
    }
    writeln!(out, "done {i}")?;
    Ok(())
}

/// Settings of a fuzzing run.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// What to fuzz.
    pub target: Target,
    /// How long.
    pub duration: Duration,
    /// Seed of the input stream.
    pub seed: u64,
    /// Where findings' inputs are saved (created on the first finding).
    pub out: PathBuf,
    /// Allocation cap per input, in bytes.
    pub cap: usize,
}

/// One input that made a reader fail badly.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Index of the input in the seed's stream.
    pub index: u64,
    /// What happened: the panic message, the exit status and stderr, or the hang.
    pub kind: String,
    /// The folder holding the input's files.
    pub saved: PathBuf,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Inputs started.
    pub inputs: u64,
    /// Findings, in input order.
    pub findings: Vec<Finding>,
}

/// Runs the fuzzer (the supervisor side) for `settings.duration`, restarting the
/// worker after each crash; `on_event` sees every finding as it happens and the
/// number of inputs tried so far.
pub fn run(
    settings: &Settings,
    mut on_event: impl FnMut(u64, Option<&Finding>),
) -> anyhow::Result<Summary> {
    let corpus = Corpus::new(settings.target)?;
    let exe = std::env::current_exe().context("cannot find the flowrl executable")?;
    let deadline = Instant::now() + settings.duration;
    let mut summary = Summary {
        inputs: 0,
        findings: Vec::new(),
    };
    let mut next = 0u64;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut child = Command::new(&exe)
            .args(["fuzz", settings.target.name()])
            .args(["--seed", &settings.seed.to_string()])
            .args(["--cap", &settings.cap.to_string()])
            .args(["--worker-from", &next.to_string()])
            .args(["--worker-ms", &left.as_millis().to_string()])
            .env(crate::limits::MEMORY_LIMIT_VAR, settings.cap.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the fuzz worker {}", exe.display()))?;
        let (lines, stderr) = listen(&mut child)?;
        let mut current = None;
        let mut done = false;
        let outcome = loop {
            match lines.recv_timeout(HANG) {
                Ok(line) => {
                    let mut parts = line.splitn(3, ' ');
                    let (word, index) = (parts.next(), parts.next().and_then(|i| i.parse().ok()));
                    match (word, index) {
                        (Some("start"), Some(i)) => {
                            current = Some(i);
                            summary.inputs += 1;
                            on_event(summary.inputs, None);
                        }
                        (Some("panic"), Some(i)) => {
                            let kind = format!("panic: {}", parts.next().unwrap_or(""));
                            let finding = save(settings, &corpus, i, kind)?;
                            on_event(summary.inputs, Some(&finding));
                            summary.findings.push(finding);
                        }
                        (Some("done"), Some(i)) => {
                            next = i;
                            done = true;
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Some(format!("hang: no progress for {} s", HANG.as_secs()));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().context("cannot wait for the fuzz worker")?;
                    if status.success() && done {
                        break None;
                    }
                    let stderr = stderr.join().unwrap_or_default();
                    let last = stderr.lines().last().unwrap_or("").trim().to_string();
                    break Some(format!("worker ended with {status}: {last}"));
                }
            }
        };
        if let Some(kind) = outcome {
            let Some(i) = current else {
                bail!("the fuzz worker failed before running any input: {kind}");
            };
            let finding = save(settings, &corpus, i, kind)?;
            on_event(summary.inputs, Some(&finding));
            summary.findings.push(finding);
            next = i + 1;
        }
    }
    Ok(summary)
}

/// A worker's stdout lines and the thread collecting its stderr.
type Listening = (mpsc::Receiver<String>, std::thread::JoinHandle<String>);

/// The worker's stdout lines on a channel, and its stderr collected by a thread.
fn listen(child: &mut Child) -> anyhow::Result<Listening> {
    let stdout = child.stdout.take().context("the worker has no stdout")?;
    let mut stderr = child.stderr.take().context("the worker has no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok((rx, err))
}

/// Saves input `i` to `<out>/<target>-seed<S>-input<i>/` with a `finding.txt`.
fn save(settings: &Settings, corpus: &Corpus, i: u64, kind: String) -> anyhow::Result<Finding> {
    let dir = settings.out.join(format!(
        "{}-seed{}-input{i}",
        settings.target.name(),
        settings.seed
    ));
    corpus.input(settings.seed, i).write(&dir)?;
    let note = format!(
        "target {}\nseed {}\ninput {i}\n{kind}\n",
        settings.target.name(),
        settings.seed
    );
    std::fs::write(dir.join("finding.txt"), note)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(Finding {
        index: i,
        kind,
        saved: dir,
    })
}
