//! The repository's behaviour sets (`assets/behaviour/<env-id>/`, documented in
//! `assets/behaviour/README.md`): each opens, its expert snapshot reaches the
//! D4RL-normalised level it was trained for, its recipe is the documented ARS run, and
//! `flowrl collect` gives every tier of the task from it (the replay tiers regenerate
//! their first rollouts from the recipe and check them). Needs `flowrl setup mujoco`
//! (skipped with the reason otherwise, unless `FLOWRL_REQUIRE_MUJOCO=1`).

use std::path::Path;
use std::process::Command;

use flowrl::behaviour::{recipe, set, ArsConfig, BehaviourSet};
use flowrl::data::{store, Dataset};

/// Each committed set: environment, the seed of its ARS run, the expert's least
/// normalised return (the targets) and the medium snapshot's normalised band
/// (around D4RL's medium data: 44, 40 and 62).
const SETS: [(&str, u64, f64, (f64, f64)); 3] = [
    ("Hopper-v5", 0, 90.0, (30.0, 50.0)),
    ("HalfCheetah-v5", 0, 40.0, (30.0, 50.0)),
    ("Walker2d-v5", 1, 80.0, (50.0, 70.0)),
];

/// `flowrl collect` of `size` of `tier` on `env` from the repository's set, in `dir`.
fn collect(dir: &Path, env: &str, tier: &str, size: &str) -> Dataset {
    let out = format!("{env}-{tier}.safetensors");
    let args = format!("collect --env {env} --tier {tier} --seed 3 --out {out} {size}");
    let run = Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args.split_whitespace())
        .env(recipe::CACHE_VAR, dir.join("cache"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "flowrl {args} failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    store::load(&dir.join(out)).unwrap()
}

#[test]
fn committed_sets_reach_their_levels_and_give_every_tier() {
    for (env, seed, expert_floor, (medium_low, medium_high)) in SETS {
        let dir = set::default_dir(env);
        let set = BehaviourSet::open(&dir, env).unwrap();
        let reference = flowrl_envs::reference_returns(env).unwrap();
        let expert = reference.normalized(set.expert.info().eval_return);
        let medium = reference.normalized(set.medium.info().eval_return);
        assert!(expert >= expert_floor, "{env}: expert at {expert:.1}");
        assert!(
            (medium_low..=medium_high).contains(&medium),
            "{env}: medium at {medium:.1}"
        );
        assert!(set.medium.info().iteration < set.expert.info().iteration);
        // The recipe is the documented run: the environment's ARS defaults and its
        // seed, trained for as many iterations as it records rollouts of; no rollouts
        // are committed.
        let recipe = set.recipe.as_ref().expect("a committed set has its recipe");
        let mut documented = ArsConfig::defaults(env, seed);
        documented.iterations = recipe.iterations();
        assert_eq!(recipe.config, documented, "{env}");
        assert_eq!(
            set.rollout_iterations, 0,
            "{env}: rollouts are not committed"
        );
        assert!(recipe.iterations() >= set.expert.info().iteration);
    }
    if !flowrl_envs::mujoco::ready_or_skip("collecting from the committed behaviour sets") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The one test of this binary: the in-process recipe reads the same cache.
    std::env::set_var(recipe::CACHE_VAR, tmp.path().join("cache"));
    for (env, ..) in SETS {
        for tier in ["medium", "expert", "medium-expert"] {
            let ds = collect(tmp.path(), env, tier, "--episodes 2");
            assert_eq!(ds.num_episodes(), 2, "{env} {tier}");
            let policies = &ds.meta().provenance.behaviour_set.as_ref().unwrap();
            let expected = match tier {
                "medium" => ["medium", "medium"],
                "expert" => ["expert", "expert"],
                _ => ["medium", "expert"],
            };
            assert_eq!(policies.episode_policies, expected, "{env} {tier}");
        }
        // The recipe makes the first rollouts again, bit for bit (checked against the
        // recorded sha256 inside `rollouts`).
        let set = BehaviourSet::open(&set::default_dir(env), env).unwrap();
        let recipe = set.recipe.as_ref().unwrap();
        let first = recipe.rollouts(1).unwrap();
        assert!(
            first.starts_with(tmp.path().join("cache")),
            "{}",
            first.display()
        );
    }
    // A replay tier through `collect`: Hopper's medium-replay reads (and regenerates)
    // the buffer up to the medium snapshot, iteration 90; a size below it takes evenly
    // spaced iterations.
    let env = "Hopper-v5";
    let ds = collect(tmp.path(), env, "medium-replay", "--episodes 100");
    let p = ds.meta().provenance.behaviour_set.as_ref().unwrap();
    assert_eq!(ds.num_episodes(), 100);
    // 16 episodes an iteration: every 12th (12, 24, .., 84) holds 112.
    assert_eq!(p.episode_policies.first().unwrap(), "iter-000012");
    assert_eq!(p.episode_policies.last().unwrap(), "iter-000084");
}
