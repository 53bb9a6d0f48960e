"""DreamerV2 (Hafner et al. 2021, "Mastering Atari with Discrete World Models"): categorical
RSSM (32 x 32, straight-through), KL balancing (alpha 0.8), Bernoulli continue head, actor
mixing REINFORCE and dynamics backprop (rho), slow critic target. Values are the paper's DMC
settings (dreamerv2 configs.yaml `dmc_proprio`/`dmc_vision`) where it gives them."""

from __future__ import annotations

from worldzoo.config import Config, recipe

DEBUG = {
    "encoder.depth": 4, "encoder.mlp_layers": 1, "encoder.mlp_units": 16,
    "decoder.depth": 4, "decoder.mlp_layers": 1, "decoder.mlp_units": 16,
    "rssm.deter": 16, "rssm.hidden": 16, "rssm.stoch": 4, "rssm.classes": 4,
    "reward.layers": 1, "reward.units": 16, "cont.layers": 1, "cont.units": 16,
    "critic.layers": 1, "critic.units": 16, "actor.layers": 1, "actor.units": 16,
    "train.batch_size": 4, "train.batch_length": 8, "train.horizon": 4,
    "train.prefill": 100, "train.pretrain": 2, "train.train_ratio": 32.0,
    "train.eval_every": 1000, "train.eval_episodes": 1, "train.log_every": 100,
    "train.checkpoint_every": 1000, "train.steps": 400,
}

# CPU experiments with vector observations: the paper's DMC RSSM (200), narrower MLPs.
SMALL = {
    "encoder.mlp_layers": 2, "encoder.mlp_units": 256, "decoder.mlp_layers": 2,
    "decoder.mlp_units": 256, "reward.layers": 2, "reward.units": 256, "cont.layers": 2,
    "cont.units": 256, "critic.layers": 2, "critic.units": 256, "actor.layers": 2,
    "actor.units": 256, "train.batch_size": 16, "train.batch_length": 50,
    "train.train_ratio": 64.0, "train.eval_every": 2500, "train.eval_episodes": 5,
    "train.checkpoint_every": 10000,
}


@recipe(presets={"debug": DEBUG, "small": SMALL, "paper": {}})
def dreamerv2() -> Config:
    """The paper's choices with its DMC hyperparameters (Atari differences in comments)."""
    mlp = {"act": "elu", "norm": "none"}
    return {
        "encoder": {"name": "multi", "depth": 48, "mlp_layers": 4, "mlp_units": 400, **mlp},
        "decoder": {"name": "multi", "depth": 48, "mlp_layers": 4, "mlp_units": 400,
                    "vector_dist": "mse", "image_dist": "normal", **mlp},
        # DMC: deter/hidden 200 (Atari 600); GRU with LayerNorm on the gates
        "rssm": {"name": "categorical", "stoch": 32, "classes": 32, "deter": 200,
                 "hidden": 200, "cell": "norm_gru", "unimix": 0.0, "initial": "zeros", **mlp},
        "kl": {"name": "balanced", "alpha": 0.8, "free": 1.0, "scale": 1.0},  # Atari: 0.1, 0
        "reward": {"name": "mse", "layers": 4, "units": 400, **mlp},
        # the continue head is trained on is_terminal; DMC never terminates (V2 DMC: off)
        "cont": {"name": "bernoulli", "layers": 4, "units": 400, **mlp},
        # rho auto: 1 (REINFORCE) for discrete actions as Atari, 0 (dynamics) for DMC
        "actor": {"name": "mixed", "rho": None, "layers": 4, "units": 400,
                  "dist": "trunc_normal", "min_std": 0.1, "ent_scale": 1e-4,  # Atari: 1e-3
                  "expl_noise": 0.0, **mlp},
        "critic": {"name": "mse", "layers": 4, "units": 400, **mlp},
        "critic_target": {"name": "slow", "rate": 1.0, "every": 100},
        "return_norm": {"name": "none"},
        "optim": {"name": "adam", "model_lr": 3e-4, "actor_lr": 8e-5, "critic_lr": 8e-5,
                  "eps": 1e-5, "clip": 100.0, "model_eps": 1e-5, "model_clip": 100.0,
                  "weight_decay": 1e-6},
        "train": {
            "steps": 1_000_000,           # env steps (action repeat counted)
            "batch_size": 16, "batch_length": 50, "horizon": 15,
            "gamma": 0.99, "lam": 0.95,   # Atari: gamma 0.999
            "train_ratio": 160.0,         # 1 update of 16 x 50 every 5 policy steps
            "prefill": 2000,              # 1000 policy steps at action repeat 2
            "pretrain": 100,
            "replay_capacity": 2_000_000,
            "eval_every": 10_000, "eval_episodes": 10, "eval_video": False,
            "log_every": 1000, "checkpoint_every": 20_000,
        },
        "env": {},
    }
