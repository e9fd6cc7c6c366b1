//! D4RL-style tiers of the MuJoCo locomotion tasks from a behaviour set: a tiny
//! Hopper-v5 run (`flowrl behaviour train`), `flowrl behaviour select`, then
//! `flowrl collect` of every tier (sizes, which policy made which episode, the replay
//! tiers against the stored rollouts, the action noise, reproducibility) and the
//! errors. The Hopper test needs `flowrl setup mujoco` (skipped with the reason
//! otherwise, unless `FLOWRL_REQUIRE_MUJOCO=1`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowrl::behaviour::{recipe, run, set, BehaviourPolicy};
use flowrl::data::{store, Actions, BehaviourSetProvenance, Dataset};
use flowrl_envs::Action;

/// Runs `flowrl` in `dir` with the whitespace-separated `args` (regenerated rollouts
/// go to `dir/behaviour-cache`).
fn flowrl(dir: &Path, args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args.split_whitespace())
        .env(recipe::CACHE_VAR, dir.join("behaviour-cache"))
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &str) -> String {
    let out = flowrl(dir, args);
    assert!(
        out.status.success(),
        "flowrl {args} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(dir: &Path, args: &str) -> String {
    let out = flowrl(dir, args);
    assert!(!out.status.success(), "flowrl {args} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn provenance(ds: &Dataset) -> &BehaviourSetProvenance {
    ds.meta()
        .provenance
        .behaviour_set
        .as_ref()
        .expect("a behaviour-set provenance")
}

fn continuous(ds: &Dataset) -> &[f32] {
    match ds.actions() {
        Actions::Continuous { values, .. } => values,
        Actions::Discrete { .. } => panic!("continuous actions expected"),
    }
}

/// The steps of two datasets are equal (arrays and episode structure).
fn assert_same_steps(a: &Dataset, b: &Dataset, what: &str) {
    assert_eq!(a.observations(), b.observations(), "{what}: observations");
    assert_eq!(a.actions(), b.actions(), "{what}: actions");
    assert_eq!(a.rewards(), b.rewards(), "{what}: rewards");
    assert_eq!(a.terminated(), b.terminated(), "{what}: terminated");
    assert_eq!(a.truncated(), b.truncated(), "{what}: truncated");
    assert_eq!(a.episode_offsets(), b.episode_offsets(), "{what}: offsets");
}

/// Episode `e` of `a` equals episode `f` of `b`.
fn assert_same_episode(a: &Dataset, e: usize, b: &Dataset, f: usize, what: &str) {
    let (ra, rb) = (a.episode(e), b.episode(f));
    assert_eq!(ra.len(), rb.len(), "{what}: length");
    let (oa, ob) = (a.obs_dim(), b.obs_dim());
    assert_eq!(
        &a.observations()[ra.start * oa..ra.end * oa],
        &b.observations()[rb.start * ob..rb.end * ob],
        "{what}: observations"
    );
    assert_eq!(&a.rewards()[ra.clone()], &b.rewards()[rb.clone()], "{what}");
    let d = 3;
    assert_eq!(
        &continuous(a)[ra.start * d..ra.end * d],
        &continuous(b)[rb.start * d..rb.end * d],
        "{what}: actions"
    );
}

/// The episodes of the stored rollouts of iterations `1..=last`, concatenated, with
/// the iteration of each.
fn stored(set: &Path, last: u64) -> (Vec<Dataset>, Vec<String>) {
    let mut files = Vec::new();
    let mut names = Vec::new();
    for i in 1..=last {
        let ds = store::load(&run::rollouts_path(set, i)).unwrap();
        names.extend((0..ds.num_episodes()).map(|_| format!("iter-{i:06}")));
        files.push(ds);
    }
    (files, names)
}

/// Checks that `ds` is the stored episodes, in order.
fn assert_is_replay(ds: &Dataset, files: &[Dataset], what: &str) {
    let mut e = 0;
    for f in files {
        for k in 0..f.num_episodes() {
            assert_same_episode(ds, e, f, k, &format!("{what} episode {e}"));
            assert_eq!(ds.episode_terminated(e), f.episode_terminated(k), "{what}");
            e += 1;
        }
    }
    assert_eq!(e, ds.num_episodes(), "{what}: episode count");
}

/// Trains a tiny Hopper run: 2 iterations, snapshot `final` copied to `mid`, then
/// resumed to 4 iterations; returns the run folder.
fn tiny_run(dir: &Path) -> PathBuf {
    let train = dir.join("train");
    ok(
        dir,
        "behaviour train --env Hopper-v5 --seed 3 --out train --iterations 2 \
         --directions 2 --top 1 --horizon 150 --eval-every 1 --eval-episodes 2 \
         --checkpoint-every 1",
    );
    std::fs::copy(
        run::snapshot_path(&train, "final"),
        run::snapshot_path(&train, "mid"),
    )
    .unwrap();
    ok(dir, "behaviour train --resume train --iterations 4");
    train
}

#[test]
fn hopper_tiers_from_a_behaviour_set() {
    if !flowrl_envs::mujoco::ready_or_skip("the Hopper-v5 behaviour-tier checks") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = tiny_run(dir);
    let set_dir = dir.join("set");

    // select: the two snapshots, every rollout, the selection; refuses an existing --out
    // and an unknown snapshot name.
    let said = ok(
        dir,
        "behaviour select --from train --medium mid --expert final --out set",
    );
    assert!(said.contains("medium-replay: 1 to 2"), "{said}");
    for i in 1..=4 {
        assert_eq!(
            std::fs::read(run::rollouts_path(&set_dir, i)).unwrap(),
            std::fs::read(run::rollouts_path(&train, i)).unwrap()
        );
    }
    assert!(!run::rollouts_path(&set_dir, 5).exists());
    let medium = BehaviourPolicy::load(&set_dir.join(set::MEDIUM_FILE)).unwrap();
    let expert = BehaviourPolicy::load(&set_dir.join(set::EXPERT_FILE)).unwrap();
    assert_eq!(medium.info().iteration, 2);
    assert_eq!(expert.info().iteration, 4);
    let err = fails(
        dir,
        "behaviour select --from train --medium mid --expert final --out set",
    );
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        dir,
        "behaviour select --from train --medium nope --expert final --out other",
    );
    assert!(
        err.contains("--medium nope") && err.contains("snapshots"),
        "{err}"
    );
    assert!(!dir.join("other").exists());

    // `size` and `extra` are flags, e.g. "--episodes 4".
    let collect = |tier: &str, size: &str, seed: u64, extra: &str, out: &str| {
        ok(
            dir,
            &format!(
                "collect --env Hopper-v5 --tier {tier} --seed {seed} --behaviour set \
                 --out {out} {size} {extra}"
            ),
        );
        store::load(&dir.join(out)).unwrap()
    };

    // medium: episode count, policies, noise recorded, snapshot returns recorded.
    let med = collect("medium", "--episodes 4", 5, "", "medium.safetensors");
    assert_eq!(med.num_episodes(), 4);
    let p = provenance(&med);
    assert_eq!(p.episode_policies, vec!["medium"; 4]);
    assert_eq!(p.action_noise, Some(0.05));
    assert_eq!(
        (p.medium_snapshot.as_str(), p.expert_snapshot.as_str()),
        ("mid", "final")
    );
    assert_eq!(p.expert_return, expert.info().eval_return);
    assert_eq!(p.medium_iteration, 2);
    assert_eq!(med.meta().provenance.tier.as_deref(), Some("medium"));
    let (low, high) = medium.action_bounds();
    assert!(continuous(&med).iter().all(|a| (low..=high).contains(a)));

    // Noise: without it the actions are the snapshot's; with it they differ.
    let clean = collect(
        "medium",
        "--episodes 2",
        5,
        "--action-noise 0",
        "clean.safetensors",
    );
    for t in 0..clean.len() {
        let Action::Continuous(a) = medium.act(clean.observation(t)) else {
            unreachable!()
        };
        assert_eq!(
            &continuous(&clean)[t * 3..t * 3 + 3],
            a.as_slice(),
            "step {t}"
        );
    }
    assert_ne!(&continuous(&clean)[..3], &continuous(&med)[..3]);

    // Same seed, same data; another seed, other data.
    let again = collect("medium", "--episodes 4", 5, "", "again.safetensors");
    assert_same_steps(&med, &again, "medium with the same seed");
    assert_eq!(med.meta(), again.meta());
    // ... whatever the number of threads.
    let out = Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(
            "collect --env Hopper-v5 --tier medium --seed 5 --behaviour set --episodes 4 \
             --out one-thread.safetensors"
                .split_whitespace(),
        )
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = store::load(&dir.join("one-thread.safetensors")).unwrap();
    assert_same_steps(&med, &one, "medium on one thread");
    let other = collect("medium", "--episodes 4", 6, "", "other.safetensors");
    assert_ne!(med.observations(), other.observations());

    // expert by transitions: whole episodes until at least N.
    let exp = collect("expert", "--transitions 300", 5, "", "expert.safetensors");
    let lengths: Vec<usize> = exp.episode_lengths().collect();
    assert!(
        exp.len() >= 300 && exp.len() - lengths.last().unwrap() < 300,
        "{lengths:?}"
    );
    assert!(provenance(&exp)
        .episode_policies
        .iter()
        .all(|p| p == "expert"));

    // medium-expert alternates (odd: expert); episode k is the tier's episode k.
    let me = collect("medium-expert", "--episodes 4", 5, "", "me.safetensors");
    assert_eq!(
        provenance(&me).episode_policies,
        vec!["medium", "expert", "medium", "expert"]
    );
    assert_same_episode(&me, 0, &med, 0, "medium-expert episode 0");
    assert_same_episode(&me, 2, &med, 2, "medium-expert episode 2");
    assert_same_episode(&me, 1, &exp, 1, "medium-expert episode 1");

    // medium-replay: the rollouts of iterations 1..=2, exactly and in order.
    let (files, names) = stored(&set_dir, 2);
    let count: usize = files.iter().map(Dataset::num_episodes).sum();
    let mr = collect(
        "medium-replay",
        &format!("--episodes {count}"),
        0,
        "",
        "mr.safetensors",
    );
    assert_is_replay(&mr, &files, "medium-replay");
    assert_eq!(provenance(&mr).episode_policies, names);
    assert_eq!(provenance(&mr).action_noise, None);
    let more = count + 1;
    let err = fails(
        dir,
        &format!(
            "collect --env Hopper-v5 --tier medium-replay --episodes {more} \
         --behaviour set --out x.safetensors"
        ),
    );
    assert!(err.contains(&format!("holds {count} episodes")), "{err}");
    // A size below the buffer: whole iterations evenly spaced over it (here iteration
    // 2 of 1..=2), then whole episodes until the size.
    let part = collect(
        "medium-replay",
        "--episodes 1",
        0,
        "",
        "mr-part.safetensors",
    );
    assert_eq!(provenance(&part).episode_policies, ["iter-000002"]);
    assert_same_episode(&part, 0, &files[1], 0, "medium-replay, spaced");
    // full-replay: every rollout (iterations 1..=4).
    let (files, names) = stored(&set_dir, 4);
    let total: usize = files.iter().map(Dataset::len).sum();
    let fr = collect(
        "full-replay",
        &format!("--transitions {total}"),
        0,
        "",
        "fr.safetensors",
    );
    assert_is_replay(&fr, &files, "full-replay");
    assert_eq!(provenance(&fr).episode_policies, names);
    // Two iterations' worth of episodes out of four: iterations 2 and 4.
    let per_iteration = files[0].num_episodes();
    let spaced = collect(
        "full-replay",
        &format!("--episodes {}", 2 * per_iteration),
        0,
        "",
        "fr-spaced.safetensors",
    );
    assert_is_replay(
        &spaced,
        &[files[1].clone(), files[3].clone()],
        "full-replay, spaced",
    );

    // A set without rollouts makes them again from its recipe, in the cache, and
    // checks each file against its recorded sha256: the replay tiers are the same.
    ok(
        dir,
        "behaviour select --from train --medium mid --expert final --without-rollouts \
         --out lean",
    );
    let lean = dir.join("lean");
    assert!(!lean.join(run::ROLLOUTS_DIR).exists());
    let lean_collect = |tier: &str, size: &str, out: &str| {
        ok(
            dir,
            &format!("collect --env Hopper-v5 --tier {tier} --behaviour lean --out {out} {size}"),
        );
        store::load(&dir.join(out)).unwrap()
    };
    let fr_lean = lean_collect(
        "full-replay",
        &format!("--transitions {total}"),
        "fr-lean.safetensors",
    );
    assert_same_steps(&fr, &fr_lean, "full-replay made again from the recipe");
    let mr_lean = lean_collect(
        "medium-replay",
        &format!("--episodes {count}"),
        "mr-lean.safetensors",
    );
    assert_same_steps(&mr, &mr_lean, "medium-replay made again from the recipe");
    assert!(dir.join("behaviour-cache").is_dir());
    // A recorded hash the regenerated file does not have: an error naming the file.
    let recipe_path = lean.join(recipe::RECIPE_FILE);
    let text = std::fs::read_to_string(&recipe_path).unwrap();
    let mut r: recipe::Recipe = serde_json::from_str(&text).unwrap();
    r.rollouts_sha256[2] = "0".repeat(64);
    std::fs::write(&recipe_path, r.to_json().unwrap()).unwrap();
    let err = fails(
        dir,
        "collect --env Hopper-v5 --tier full-replay --episodes 1000 --behaviour lean \
         --out x.safetensors",
    );
    assert!(
        err.contains("iter-000003.safetensors") && err.contains("differ from the recorded"),
        "{err}"
    );

    // random needs no set; dataset info shows our expert snapshot's return.
    let rnd = dir.join("random.safetensors");
    ok(
        dir,
        "collect --env Hopper-v5 --tier random --transitions 200 --behaviour \
         nowhere --out random.safetensors",
    );
    assert!(store::load(&rnd).unwrap().len() >= 200);
    let info = ok(dir, "dataset info me.safetensors");
    assert!(
        info.contains(&format!(
            "expert snapshot return {:.2}",
            expert.info().eval_return
        )) && info.contains("episodes by policy: medium 2, expert 2"),
        "{info}"
    );
    // The first evaluation's milestone snapshot was saved at iteration 0: no rollouts.
    let early = std::fs::read_dir(train.join(run::SNAPSHOTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| BehaviourPolicy::load(p).unwrap().info().iteration == 0)
        .expect("a snapshot of iteration 0");
    let early = early.file_stem().unwrap().to_str().unwrap();
    let err = fails(
        dir,
        &format!(
            "behaviour select --from train --medium {} --expert final --out early",
            early
        ),
    );
    assert!(
        err.contains("iteration 0") && err.contains("empty"),
        "{err}"
    );

    // A missing set: the error names the folder, what is missing and the commands.
    let err = fails(
        dir,
        "collect --env Hopper-v5 --tier medium --episodes 2 --behaviour nowhere \
         --out x.safetensors",
    );
    assert!(
        err.contains("nowhere")
            && err.contains("does not exist")
            && err.contains("flowrl behaviour train --env Hopper-v5")
            && err.contains("flowrl behaviour select --from"),
        "{err}"
    );
    std::fs::remove_file(set_dir.join(set::EXPERT_FILE)).unwrap();
    let err = fails(
        dir,
        "collect --env Hopper-v5 --tier expert --episodes 2 --behaviour set --out x.safetensors",
    );
    assert!(err.contains("expert.safetensors is missing"), "{err}");
    // Without rollouts a set still gives the snapshot tiers, not the replay ones.
    std::fs::copy(
        set_dir.join(set::MEDIUM_FILE),
        set_dir.join(set::EXPERT_FILE),
    )
    .unwrap();
    std::fs::remove_dir_all(set_dir.join(run::ROLLOUTS_DIR)).unwrap();
    std::fs::remove_file(set_dir.join(recipe::RECIPE_FILE)).unwrap();
    collect(
        "medium-expert",
        "--episodes 2",
        1,
        "",
        "no-rollouts.safetensors",
    );
    let err = fails(
        dir,
        "collect --env Hopper-v5 --tier full-replay --episodes 1 --behaviour set \
         --out x.safetensors",
    );
    assert!(
        err.contains("lacks rollouts")
            && err.contains("set")
            && err.contains("flowrl behaviour select"),
        "{err}"
    );
    // The default folder is the repository's assets/behaviour/<env-id>/.
    let default = set::default_dir("Hopper-v5");
    assert!(default.ends_with("assets/behaviour/Hopper-v5"));
    if !default.exists() {
        let err = fails(
            dir,
            "collect --env Hopper-v5 --tier medium-replay --episodes 2 --out x.safetensors",
        );
        assert!(
            err.contains(&default.display().to_string()) && err.contains("flowrl behaviour select"),
            "{err}"
        );
    }
    assert!(!dir.join("x.safetensors").exists());
}

#[test]
fn sizes_and_classic_control_tiers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = fails(
        dir,
        "collect --env CartPole-v1 --tier full-replay --episodes 2 --out x.safetensors",
    );
    assert!(
        err.contains("full-replay") && err.contains("CartPole-v1"),
        "{err}"
    );
    let err = fails(
        dir,
        "collect --env CartPole-v1 --tier expert --episodes 2 --transitions 10 --out x.safetensors",
    );
    assert!(err.contains("--transitions"), "{err}");
    let err = fails(
        dir,
        "collect --env CartPole-v1 --tier expert --out x.safetensors",
    );
    assert!(err.contains("--episodes"), "{err}");
    let err = fails(
        dir,
        "collect --env CartPole-v1 --tier medium-replay --transitions 100 --out x.safetensors",
    );
    assert!(err.contains("--episodes instead"), "{err}");

    // Classic control by transitions: the prefix of the same collection by episodes.
    ok(
        dir,
        "collect --env Pendulum-v1 --tier medium-expert --transitions 1000 \
         --seed 4 --out t.safetensors",
    );
    ok(
        dir,
        "collect --env Pendulum-v1 --tier medium-expert --episodes 5 --seed 4 --out e.safetensors",
    );
    let t = store::load(&dir.join("t.safetensors")).unwrap();
    let e = store::load(&dir.join("e.safetensors")).unwrap();
    // Pendulum episodes are 200 steps: 1000 transitions are 5 episodes.
    assert_eq!(t.len(), 1000);
    assert_same_steps(&t, &e, "Pendulum by transitions and by episodes");
    assert!(t.meta().provenance.behaviour_set.is_none());
}
