"""Writes the small HDF5 fixtures that tests/datasets.rs imports.

Run from the repository root:  python3 tests/data/make_fixtures.py
Needs: pip install h5py numpy "minari[hdf5,create]" gymnasium pillow
The outputs are committed, so the Rust tests need no Python.

D4RL layout (written with h5py exactly as D4RL's files are: top-level arrays,
booleans as h5py bools, optional `next_observations`, `infos/*`, `metadata/*`).
Values follow simple formulas so the tests can check them exactly.

Minari layout: real datasets written by minari's DataCollector (CartPole-v1,
discrete; Pendulum-v1, continuous, with reference scores), copied from the
Minari root into tests/data/minari_*/data/, plus an `expected.json` per dataset
holding what the importer must produce (computed here with h5py).
"""

import json
import os
import pathlib
import shutil
import tempfile

import h5py
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def d4rl_basic():
    # 12 steps, obs 3-dim f32, actions 2-dim f32, rewards [N] f32.
    # terminal at 3, timeout at 6, both at 9, steps 10..11 unflagged (trailing).
    n = 12
    i = np.arange(n, dtype=np.float32)
    obs = np.stack([i, i + 0.25, -i], axis=1).astype(np.float32)
    act = np.stack([i * 0.1, -i * 0.1], axis=1).astype(np.float32)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[[3, 9]] = True
    timeouts[[6, 9]] = True
    with h5py.File(HERE / "d4rl_basic.hdf5", "w") as f:
        f["observations"] = obs
        f["actions"] = act
        f["rewards"] = i
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f["next_observations"] = np.roll(obs, -1, axis=0)
        f["infos/qpos"] = np.zeros((n, 2), dtype=np.float32)
        f["infos/action_log_probs"] = np.zeros(n, dtype=np.float32)
        f["metadata/algorithm"] = "SAC"
        f["metadata/iteration"] = np.int64(1000)
        f["metadata"].attrs["note"] = "flowrl fixture"


def d4rl_col_f64():
    # 10 steps, rewards [N, 1] f64, observations f64 [N, 2], gzip-chunked arrays;
    # timeouts at 4 and 9: two truncated episodes of 5 steps.
    n = 10
    i = np.arange(n, dtype=np.float64)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[[4, 9]] = True
    kw = dict(compression="gzip", chunks=True)
    with h5py.File(HERE / "d4rl_rewards_col_f64.hdf5", "w") as f:
        f.create_dataset("observations", data=np.stack([i, 2 * i], axis=1), **kw)
        f.create_dataset("actions", data=(i * 0.5).astype(np.float32)[:, None], **kw)
        f.create_dataset("rewards", data=(i * 0.5)[:, None], **kw)
        f.create_dataset("terminals", data=np.zeros(n, dtype=bool), **kw)
        f.create_dataset("timeouts", data=timeouts, **kw)


def d4rl_no_timeouts():
    # 10 steps, no `timeouts`; terminal at 2; rewards [N, 1] f32.
    # With a maximum episode length of 4: [0..3) terminated, [3..7) truncated,
    # [7..10) trailing (3 steps).
    n = 10
    i = np.arange(n, dtype=np.float32)
    terminals = np.zeros(n, dtype=bool)
    terminals[2] = True
    with h5py.File(HERE / "d4rl_no_timeouts.hdf5", "w") as f:
        f["observations"] = i[:, None]
        f["actions"] = -i[:, None]
        f["rewards"] = np.ones((n, 1), dtype=np.float32)
        f["terminals"] = terminals


def d4rl_discrete():
    # 8 steps, integer actions [N] (discrete indices 0..2), obs 2-dim f32;
    # terminal at 4, timeout at 7.
    n = 8
    i = np.arange(n, dtype=np.float32)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[4] = True
    timeouts[7] = True
    with h5py.File(HERE / "d4rl_discrete.hdf5", "w") as f:
        f["observations"] = np.stack([i, -i], axis=1)
        f["actions"] = (np.arange(n) % 3).astype(np.int64)
        f["rewards"] = np.ones(n, dtype=np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts


def d4rl_bad():
    n = 6
    obs = np.zeros((n, 2), dtype=np.float32)
    flags = np.zeros(n, dtype=bool)
    flags[-1] = True
    with h5py.File(HERE / "d4rl_missing_actions.hdf5", "w") as f:
        f["observations"] = obs
        f["rewards"] = np.zeros(n, dtype=np.float32)
        f["terminals"] = flags
        f["timeouts"] = np.zeros(n, dtype=bool)
    with h5py.File(HERE / "d4rl_length_mismatch.hdf5", "w") as f:
        f["observations"] = obs
        f["actions"] = np.zeros((n - 1, 1), dtype=np.float32)
        f["rewards"] = np.zeros(n, dtype=np.float32)
        f["terminals"] = flags
        f["timeouts"] = np.zeros(n, dtype=bool)
    with h5py.File(HERE / "d4rl_nan.hdf5", "w") as f:
        bad = obs.copy()
        bad[3, 1] = np.nan
        f["observations"] = bad
        f["actions"] = np.zeros((n, 1), dtype=np.float32)
        f["rewards"] = np.zeros(n, dtype=np.float32)
        f["terminals"] = flags
        f["timeouts"] = np.zeros(n, dtype=bool)
    with h5py.File(HERE / "d4rl_inf_rewards.hdf5", "w") as f:
        rewards = np.zeros(n, dtype=np.float64)
        rewards[4] = np.inf
        f["observations"] = obs
        f["actions"] = np.zeros((n, 1), dtype=np.float32)
        f["rewards"] = rewards
        f["terminals"] = flags
        f["timeouts"] = np.zeros(n, dtype=bool)
    with h5py.File(HERE / "d4rl_empty.hdf5", "w") as f:
        f["observations"] = np.zeros((0, 2), dtype=np.float32)
        f["actions"] = np.zeros((0, 1), dtype=np.float32)
        f["rewards"] = np.zeros(0, dtype=np.float32)
        f["terminals"] = np.zeros(0, dtype=bool)
        f["timeouts"] = np.zeros(0, dtype=bool)


def minari_dataset(name, env_id, max_steps, episodes, seed, policy, refs):
    import gymnasium as gym
    import minari
    from minari import DataCollector

    root = pathlib.Path(tempfile.mkdtemp())
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    env = DataCollector(gym.make(env_id, max_episode_steps=max_steps))
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        env.reset(seed=seed + e)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(policy(rng))
            done = term or trunc
    dataset_id = f"flowrl/{name}-v0"
    kwargs = dict(dataset_id=dataset_id, algorithm_name="random", author="flowrl")
    if refs is not None:
        kwargs.update(ref_min_score=refs[0], ref_max_score=refs[1],
                      eval_env=gym.make(env_id, max_episode_steps=max_steps))
    env.create_dataset(**kwargs)
    src = root / "flowrl" / f"{name}-v0" / "data"
    out = HERE / f"minari_{name}"
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    for file in ("main_data.hdf5", "metadata.json"):
        shutil.copy(src / file, out / "data" / file)
    shutil.rmtree(root)

    expected = {"episodes": []}
    with h5py.File(out / "data" / "main_data.hdf5", "r") as f:
        for e in range(episodes):
            g = f[f"episode_{e}"]
            obs, act = g["observations"][()], g["actions"][()]
            expected["episodes"].append({
                "length": int(len(g["rewards"])),
                "return": float(np.sum(g["rewards"][()], dtype=np.float64)),
                "terminated": bool(g["terminations"][-1]),
                "first_observation": obs[0].astype(float).tolist(),
                "last_observation": obs[-2].astype(float).tolist(),
                "first_action": np.atleast_1d(act[0]).astype(float).tolist(),
            })
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def main():
    d4rl_basic()
    d4rl_col_f64()
    d4rl_no_timeouts()
    d4rl_discrete()
    d4rl_bad()
    minari_dataset("cartpole", "CartPole-v1", 12, 3, 7,
                   lambda rng: int(rng.integers(0, 2)), None)
    minari_dataset("pendulum", "Pendulum-v1", 8, 2, 11,
                   lambda rng: rng.uniform(-2, 2, size=(1,)).astype(np.float32),
                   (-1500.0, -150.0))


if __name__ == "__main__":
    main()
