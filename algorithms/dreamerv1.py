"""DreamerV1 (Hafner et al. 2020, "Dream to Control"): Gaussian RSSM, free-nats KL, unit-normal
heads, fixed discount, actor trained by backpropagating lambda-returns through the dynamics."""

from __future__ import annotations

from worldzoo.config import Config, recipe

# Shared by the Dreamer recipes: tiny (tests) and CPU-experiment sizes of the V1-style nets.
DEBUG = {
    "encoder.depth": 4, "encoder.mlp_layers": 1, "encoder.mlp_units": 16,
    "decoder.depth": 4, "decoder.mlp_layers": 1, "decoder.mlp_units": 16,
    "rssm.deter": 16, "rssm.hidden": 16, "rssm.stoch": 4,
    "reward.layers": 1, "reward.units": 16, "critic.layers": 1, "critic.units": 16,
    "actor.layers": 1, "actor.units": 16,
    "train.batch_size": 4, "train.batch_length": 8, "train.horizon": 4,
    "train.prefill": 100, "train.pretrain": 2, "train.train_ratio": 32.0,
    "train.eval_every": 1000, "train.eval_episodes": 1, "train.log_every": 100,
    "train.checkpoint_every": 1000, "train.steps": 400,
}

SMALL = {  # the CPU experiment size (vector observations, 2 cores)
    "encoder.mlp_layers": 2, "encoder.mlp_units": 200, "decoder.mlp_layers": 2,
    "decoder.mlp_units": 200, "reward.units": 200, "critic.units": 200, "actor.units": 200,
    "critic.layers": 2, "actor.layers": 2,
    "train.batch_size": 16, "train.batch_length": 32, "train.train_ratio": 64.0,
    "train.prefill": 2500, "train.eval_every": 5000, "train.eval_episodes": 3,
    "train.checkpoint_every": 10000, "train.replay_capacity": 200_000,
}


@recipe(presets={"debug": DEBUG, "small": SMALL, "paper": {}})
def dreamerv1() -> Config:
    """The paper's hyperparameters (Hafner et al. 2020, appendix)."""
    mlp = {"act": "elu", "norm": "none"}
    return {
        "encoder": {"name": "multi", "depth": 32, "mlp_layers": 3, "mlp_units": 400, **mlp},
        "decoder": {"name": "multi", "depth": 32, "mlp_layers": 3, "mlp_units": 400,
                    "vector_dist": "normal", **mlp},
        "rssm": {"name": "gaussian", "stoch": 30, "deter": 200, "hidden": 200, "cell": "gru",
                 "min_std": 0.1, **mlp},
        "kl": {"name": "free_nats", "free": 3.0, "scale": 1.0},
        "reward": {"name": "normal", "layers": 2, "units": 400, **mlp},
        "cont": {"name": "none"},
        "actor": {"name": "dynamics", "layers": 4, "units": 400, "dist": "tanh_normal",
                  "init_std": 5.0, "min_std": 1e-4, "expl_noise": 0.3, **mlp},
        "critic": {"name": "normal", "layers": 3, "units": 400, **mlp},
        "critic_target": {"name": "none"},
        "return_norm": {"name": "none"},
        "optim": {"name": "adam", "model_lr": 6e-4, "actor_lr": 8e-5, "critic_lr": 8e-5,
                  "eps": 1e-7, "clip": 100.0},
        "train": {
            "steps": 1_000_000,          # env steps (action repeat counted)
            "batch_size": 50, "batch_length": 50, "horizon": 15,
            "gamma": 0.99, "lam": 0.95,
            "train_ratio": 500.0,        # replayed steps per policy step (100 updates / 1k env)
            "prefill": 5000,             # env steps of random actions before training
            "pretrain": 100,             # updates right after prefill
            "replay_capacity": 1_000_000,  # policy steps, all envs together
            "eval_every": 10_000, "eval_episodes": 10, "eval_video": False,
            "log_every": 1000, "checkpoint_every": 20_000,
        },
        "env": {},
    }
