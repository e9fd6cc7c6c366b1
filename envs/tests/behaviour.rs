//! Behaviour policies, quality tiers, reference returns and seeded collection.

use flowrl_envs::{
    collect, measure_reference_returns, reference_returns, Episode, Tier, CLASSIC_IDS,
};

fn mean_return(episodes: &[Episode]) -> f64 {
    episodes.iter().map(Episode::total_reward).sum::<f64>() / episodes.len() as f64
}

#[test]
fn published_reference_returns_are_reproduced() {
    for id in CLASSIC_IDS {
        let published = reference_returns(id).expect("classic ids have references");
        let measured = measure_reference_returns(id).expect("known id");
        for (what, p, m) in [
            ("random", published.random, measured.random),
            ("expert", published.expert, measured.expert),
        ] {
            assert!(
                (p - m).abs() <= 1e-9 * m.abs().max(1.0),
                "{id} {what}: published {p}, measured {m}"
            );
        }
        assert!(
            published.expert > published.random + 1.0,
            "{id}: the expert must beat random"
        );
    }
    assert_eq!(reference_returns("Nope-v0"), None);
}

#[test]
fn tmaze_reference_returns_are_exact() {
    for id in [
        "TMaze-Passive-L20",
        "TMaze-Active-L20",
        "TMaze-Passive-L3",
        "TMaze-Active-L2",
    ] {
        let reference = reference_returns(id).expect("T-Maze ids have references");
        assert_eq!(reference.expert, 1.0, "{id}");
        let expert = collect(id, Tier::Expert, 50, 9, &mut |_| {}).expect("known id");
        assert!(
            expert
                .iter()
                .all(|e| e.total_reward() == 1.0 && e.success == Some(true)),
            "{id}: the expert route is optimal"
        );
        // The analytic random mean against a Monte Carlo estimate: returns lie in
        // [-1 - 1/L, 1], so 4000 episodes give a standard error below 0.02.
        let random = collect(id, Tier::Random, 4000, 9, &mut |_| {}).expect("known id");
        let measured = mean_return(&random);
        let spread = (random
            .iter()
            .map(|e| (e.total_reward() - measured).powi(2))
            .sum::<f64>()
            / 4000.0)
            .sqrt();
        let tolerance = 4.0 * spread / (4000f64).sqrt() + 1e-9;
        assert!(
            (measured - reference.random).abs() <= tolerance,
            "{id}: random mean {measured}, formula {}",
            reference.random
        );
    }
    // Passive T-Maze closed form: -1 + (1 - 4^-L) / (3 L) + 4^-L / 4.
    let l = 20.0f64;
    let closed = -1.0 + (1.0 - 4f64.powf(-l)) / (3.0 * l) + 4f64.powf(-l) / 4.0;
    let dp = reference_returns("TMaze-Passive-L20")
        .expect("known id")
        .random;
    assert!(
        (dp - closed).abs() < 1e-12,
        "dynamic programme {dp}, closed form {closed}"
    );
}

/// The intended band of each tier's normalised score.
fn band(id: &str, tier: Tier) -> (f64, f64) {
    let tmaze = id.starts_with("TMaze");
    match tier {
        Tier::Random => (-10.0, 10.0),
        Tier::Expert => (95.0, 105.0),
        // T-Maze medium walks the corridor and guesses the arm: half the expert's
        // successes, no penalties, so (0.5 - R_random) / (1 - R_random) ~ 75.
        Tier::Medium if tmaze => (65.0, 85.0),
        Tier::Medium => (25.0, 55.0),
        Tier::MediumExpert if tmaze => (80.0, 95.0),
        Tier::MediumExpert => (55.0, 80.0),
        // A sweep from random to medium: between the two.
        Tier::MediumReplay if tmaze => (2.0, 45.0),
        Tier::MediumReplay => (2.0, 35.0),
        Tier::FullReplay => unreachable!("classic control has no full-replay tier"),
    }
}

#[test]
fn tiers_score_in_their_bands() {
    let ids = [
        "CartPole-v1",
        "Pendulum-v1",
        "MountainCarContinuous-v0",
        "Acrobot-v1",
        "TMaze-Passive-L30",
        "TMaze-Active-L30",
        "KeyToDoor-L30",
    ];
    for id in ids {
        let reference = reference_returns(id).expect("known id");
        for tier in Tier::SCRIPTED {
            let episodes = collect(id, tier, 100, 1234, &mut |_| {}).expect("known id");
            let score = reference.normalized(mean_return(&episodes));
            let (low, high) = band(id, tier);
            assert!(
                (low..=high).contains(&score),
                "{id} {tier}: normalised score {score:.1} outside [{low}, {high}]"
            );
        }
    }
}

#[test]
fn cartpole_expert_balances_for_the_whole_episode() {
    let episodes = collect("CartPole-v1", Tier::Expert, 100, 5, &mut |_| {}).expect("known id");
    assert!(episodes
        .iter()
        .all(|e| e.len() == 500 && e.truncated && !e.terminated));
}

#[test]
fn key_to_door_expert_always_opens_the_door() {
    let episodes = collect("KeyToDoor-L40", Tier::Expert, 50, 3, &mut |_| {}).expect("known id");
    for e in &episodes {
        assert_eq!(e.success, Some(true));
        assert!(e.terminated && !e.truncated);
        assert_eq!(e.rewards.last(), Some(&5.0), "the door pays 5 with the key");
        assert!(e.total_reward() > 5.0, "the expert eats apples");
    }
    let random = collect("KeyToDoor-L40", Tier::Random, 200, 3, &mut |_| {}).expect("known id");
    let successes = random.iter().filter(|e| e.success == Some(true)).count();
    assert!(
        successes < 100,
        "random succeeds too often: {successes} of 200"
    );
    assert!(random
        .iter()
        .all(|e| e.success.is_some() && e.len() <= 15 + 40 + 10));
}

#[test]
fn collection_is_seeded_and_reproducible() {
    for id in ["Pendulum-v1", "CartPole-v1", "TMaze-Active-L10"] {
        let mut calls = Vec::new();
        let first =
            collect(id, Tier::MediumReplay, 150, 42, &mut |n| calls.push(n)).expect("known id");
        assert_eq!(
            calls,
            (1..=150).collect::<Vec<_>>(),
            "{id}: progress counts finished episodes"
        );
        let again = collect(id, Tier::MediumReplay, 150, 42, &mut |_| {}).expect("known id");
        assert_eq!(first, again, "{id}: same seed, same episodes");
        let other = collect(id, Tier::MediumReplay, 150, 43, &mut |_| {}).expect("known id");
        assert_ne!(first, other, "{id}: another seed, other episodes");
        // Episode k does not depend on how many episodes share the lockstep lanes.
        let fewer = collect(id, Tier::Medium, 3, 42, &mut |_| {}).expect("known id");
        let more = collect(id, Tier::Medium, 100, 42, &mut |_| {}).expect("known id");
        assert_eq!(
            fewer[..],
            more[..3],
            "{id}: episodes independent of the batch"
        );
        for e in &first {
            assert_eq!(e.observations.len(), e.actions.len());
            assert_eq!(e.rewards.len(), e.actions.len());
            assert!(e.terminated || e.truncated);
        }
    }
    assert!(collect("Nope-v0", Tier::Random, 1, 0, &mut |_| {}).is_err());
    assert!(collect("CartPole-v1", Tier::Random, 0, 0, &mut |_| {})
        .expect("known id")
        .is_empty());
}

#[test]
fn medium_expert_mixes_halves_and_replay_sweeps() {
    let mixed =
        collect("TMaze-Passive-L10", Tier::MediumExpert, 40, 8, &mut |_| {}).expect("known id");
    // Odd episodes are expert (always succeed); even ones guess the arm.
    assert!(mixed
        .iter()
        .skip(1)
        .step_by(2)
        .all(|e| e.success == Some(true)));
    let guessed = mixed
        .iter()
        .step_by(2)
        .filter(|e| e.success == Some(true))
        .count();
    assert!(
        (3..=17).contains(&guessed),
        "medium guesses the arm: {guessed} of 20"
    );
    let replay = collect("Pendulum-v1", Tier::MediumReplay, 200, 8, &mut |_| {}).expect("known id");
    let early = mean_return(&replay[..50]);
    let late = mean_return(&replay[150..]);
    assert!(
        late > early + 100.0,
        "the sweep improves: early {early}, late {late}"
    );
}

#[test]
fn tier_names_round_trip() {
    for tier in Tier::ALL {
        assert_eq!(tier.to_string().parse::<Tier>(), Ok(tier));
    }
    let err = "good".parse::<Tier>().expect_err("unknown tier");
    assert!(err.to_string().contains("medium-replay"), "{err}");
}
