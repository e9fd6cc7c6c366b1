//! `flowrl bench data`: native dataset load time and training-window batch assembly
//! throughput on a synthetic dataset (default: 1M transitions, 17-dim observations,
//! 6-dim actions, 1000-step episodes; windows of K = 20, batches of 64).

use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::windows::{Sampler, WindowConfig, WindowMode};
use crate::data::{store, Dataset, DatasetBuilder, Ending, Metadata, Provenance, Space};

/// Arguments of `flowrl bench data`.
#[derive(clap::Args)]
pub struct DataArgs {
    /// Transitions in the synthetic dataset.
    #[arg(long, default_value_t = 1_000_000)]
    transitions: usize,
    /// Steps per episode.
    #[arg(long, default_value_t = 1000)]
    episode_len: usize,
    /// Observation dimension.
    #[arg(long, default_value_t = 17)]
    obs_dim: usize,
    /// Action dimension.
    #[arg(long, default_value_t = 6)]
    act_dim: usize,
    /// Window length K.
    #[arg(long, default_value_t = 20)]
    context: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Batches timed per sampler measurement.
    #[arg(long, default_value_t = 5000)]
    batches: usize,
    /// Timed repetitions of the load (the table shows the median and the best).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

fn synthetic(a: &DataArgs) -> anyhow::Result<Dataset> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut b = DatasetBuilder::new(a.obs_dim, a.act_dim, false);
    let mut obs = vec![0.0f32; a.obs_dim];
    let mut act = vec![0.0f32; a.act_dim];
    for i in 0..a.transitions {
        obs.iter_mut().for_each(|o| *o = rng.gen_range(-5.0..5.0));
        act.iter_mut().for_each(|x| *x = rng.gen_range(-1.0..1.0));
        b.push_continuous(&obs, &act, rng.gen_range(0.0..3.0));
        if (i + 1) % a.episode_len.max(1) == 0 {
            b.end_episode(Ending::Truncated);
        }
    }
    b.end_episode(Ending::Truncated);
    let meta = Metadata {
        env_id: "Synthetic-v0".into(),
        observation_space: Space::unbounded(a.obs_dim),
        action_space: Space::Box {
            low: vec![-1.0; a.act_dim],
            high: vec![1.0; a.act_dim],
        },
        provenance: Provenance {
            source: "bench".into(),
            episodes: b.episodes(),
            ..Provenance::default()
        },
        reference_returns: None,
    };
    b.build(meta)
        .map_err(|p| anyhow::anyhow!("synthetic dataset: {p}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark and prints its table.
pub fn run(a: DataArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.transitions > 0, "--transitions must be at least 1");
    anyhow::ensure!(
        a.repeats > 0 && a.batches > 0,
        "--repeats and --batches must be at least 1"
    );
    let ds = synthetic(&a)?;
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let path = dir.path().join("bench.safetensors");
    let t = Instant::now();
    store::save(&ds, &path)?;
    let save_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len() as f64;
    let mut loads = Vec::new();
    for _ in 0..a.repeats {
        let t = Instant::now();
        let back = store::load(&path)?;
        loads.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(back.len() == ds.len(), "reloaded dataset differs");
    }

    println!(
        "dataset: {} transitions, {} episodes, obs {}, act {}, file {:.1} MB",
        ds.len(),
        ds.num_episodes(),
        a.obs_dim,
        a.act_dim,
        bytes / 1e6
    );
    println!("| operation | time (median) | best | throughput |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| save (atomic) | {:.3} s | | {:.0} MB/s |",
        save_s,
        bytes / 1e6 / save_s
    );
    println!(
        "| load + validate | {:.3} s | {:.3} s | {:.0} MB/s |",
        median(loads.clone()),
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        bytes / 1e6 / median(loads)
    );

    let modes = [
        (WindowMode::Uniform, a.context, a.batch),
        (
            WindowMode::WholeEpisode,
            ds.max_episode_len(),
            (a.batch / 8).max(1),
        ),
    ];
    for (mode, context, batch_size) in modes {
        let cfg = WindowConfig {
            context,
            batch_size,
            mode,
            ..WindowConfig::default()
        };
        let mut sampler = Sampler::new(&ds, cfg)?;
        let mut batch = sampler.new_batch();
        sampler.sample(&mut batch);
        let t = Instant::now();
        let mut valid = 0;
        for _ in 0..a.batches {
            sampler.sample(&mut batch);
            valid += batch.valid_steps();
        }
        let s = t.elapsed().as_secs_f64();
        let slots = (a.batches * batch_size * context) as f64;
        println!(
            "| batches {mode:?} K={context} B={batch_size} | {:.1} us/batch | | {:.2} M timesteps/s ({:.2} M valid/s) |",
            s / a.batches as f64 * 1e6,
            slots / s / 1e6,
            valid as f64 / s / 1e6
        );
    }
    Ok(())
}
