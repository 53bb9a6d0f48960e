"""World Models (Ha & Schmidhuber 2018, "Recurrent World Models Facilitate Policy Evolution"):
V = conv VAE (z 32), M = MDN-RNN (LSTM 256, 5 Gaussians per z dim), C = linear on [z, h]
searched by CMA-ES (population 64, 16 rollouts per candidate) in the real env (CarRacing) or
in M's dream (`--set controller.train_in=dream`, the paper's Doom setting, temperature 1.15)."""

from __future__ import annotations

from worldzoo.config import Config, recipe

# Tiny sizes for tests: vector observations, one worker, a couple of generations.
DEBUG = {
    "vae": "mlp", "vae.z": 4, "vae.layers": 1, "vae.units": 16, "env.obs": "vector",
    "memory.hidden": 16, "memory.mixtures": 2,
    "train.steps": 5000, "train.random_rollouts": 3, "train.vae_epochs": 1.0,
    "train.vae_batch": 16, "train.memory_updates": 5, "train.memory_batch": 4,
    "train.memory_length": 16, "train.population": 4, "train.rollouts": 1,
    "train.generations": 2, "train.eval_every": 1, "train.eval_episodes": 1,
    "train.checkpoint_every": 1, "train.dream_length": 50, "train.workers": 1,
    "train.collect_rollouts": 2, "train.threads": 1,
}

# CPU experiments (2 cores): fewer random rollouts, shorter V/M training, a small population.
SMALL = {
    "train.steps": 1_000_000, "train.random_rollouts": 30, "train.vae_epochs": 3.0,
    "train.memory_updates": 200, "train.memory_batch": 32, "train.memory_length": 50,
    "train.population": 16, "train.rollouts": 2, "train.generations": 20,
    "train.eval_every": 5, "train.eval_episodes": 5, "train.checkpoint_every": 5,
    "train.collect_rollouts": 20, "train.threads": 1,
}


@recipe(presets={"debug": DEBUG, "small": SMALL, "paper": {}})
def worldmodels() -> Config:
    """The paper's CarRacing settings (its appendix and code)."""
    return {
        "pipeline": "worldmodels",
        "vae": {"name": "conv", "z": 32, "kl_tolerance": 0.5},
        "memory": {"name": "mdnrnn", "hidden": 256, "mixtures": 5, "temperature": 1.0},
        "controller": {"name": "linear", "train_in": "real"},
        "train": {
            # 10k random episodes + ~2k generations x 64 x 16 episodes of ~1k steps
            "steps": 2_100_000_000,
            "iterations": 1,             # >1: the iterative procedure (collect with C, retrain)
            "random_rollouts": 10_000,   # episodes of uniform random actions
            "collect_rollouts": 1000,    # episodes of C (+ noise) per later iteration
            "collect_noise": 0.1,        # Gaussian action noise / random-action probability
            "vae_epochs": 10.0, "vae_batch": 100, "vae_lr": 1e-4,
            "memory_updates": 4000, "memory_batch": 100, "memory_length": 1000,
            "memory_lr": 1e-3, "memory_clip": 1.0,
            "population": 64, "rollouts": 16, "sigma": 0.1, "generations": 2000,
            "dream_length": 1000,        # dream episode cap (time limit)
            "eval_every": 25, "eval_episodes": 100,  # generations; real episodes (counted)
            "checkpoint_every": 25,      # generations
            "workers": 2,                # rollout worker processes
            "threads": 0,                # torch threads of the main process (0: torch's own)
        },
        "env": {"obs": "pixels"},
    }
