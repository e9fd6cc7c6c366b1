"""Environment step rates of Gymnasium 1.4 and EnvPool for `flowrl bench envs --compare`.

Prints one JSON object per line: {"impl", "id", "mode", "envs", "steps", "seconds",
"steps_per_s"}. Actions are uniform in [-1, 1], drawn before timing; an episode that
ends is reset (Gymnasium's vector env and EnvPool reset by themselves).
"""

import argparse
import json
import time

import numpy as np


def gymnasium_single(env_id, steps, seed):
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(4096,) + env.action_space.shape).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % 4096])
        if terminated or truncated:
            env.reset()
    return steps, time.perf_counter() - start


def gymnasium_sync(env_id, steps, seed, n):
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(64,) + envs.action_space.shape).astype(np.float32)
    envs.reset(seed=seed)
    rounds = max(1, steps // n)
    start = time.perf_counter()
    for i in range(rounds):
        envs.step(actions[i % 64])
    return rounds * n, time.perf_counter() - start


def envpool_batch(env_id, steps, seed, n, threads):
    import envpool

    # EnvPool registers the locomotion tasks as -v4 (its own bundled MuJoCo).
    task = env_id.replace("-v5", "-v4")
    envs = envpool.make_gymnasium(task, num_envs=n, batch_size=n, num_threads=threads, seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(64, n) + envs.action_space.shape).astype(np.float32)
    envs.reset()
    rounds = max(1, steps // n)
    start = time.perf_counter()
    for i in range(rounds):
        envs.step(actions[i % 64])
    return rounds * n, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", action="append", required=True)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--lockstep", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for env_id in args.id:
        cases = [
            ("gymnasium", "single", 1, lambda: gymnasium_single(env_id, args.steps, args.seed)),
            ("gymnasium-sync", "lockstep", args.lockstep,
             lambda: gymnasium_sync(env_id, args.steps, args.seed, args.lockstep)),
            ("envpool", "lockstep", args.lockstep,
             lambda: envpool_batch(env_id, args.steps, args.seed, args.lockstep, args.threads)),
        ]
        for impl, mode, n, run in cases:
            steps, seconds = run()
            print(json.dumps({"impl": impl, "id": env_id, "mode": mode, "envs": n,
                              "steps": steps, "seconds": seconds,
                              "steps_per_s": steps / seconds}), flush=True)


if __name__ == "__main__":
    main()
