"""DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World Models", arXiv v1)
and its 2024 revision (`dreamerv3_2024`, the code of danijar/dreamerv3 since 2024 and the
Nature 2025 paper) as recipes over the same components; docs/dreamerv3-versions.md lists
the differences. Fixed hyperparameters; only the model size changes between presets."""

from __future__ import annotations

from worldzoo.config import Config, recipe

_NETS = ("encoder", "decoder", "reward", "cont", "actor", "critic")


def size(deter: int, units: int, layers: int, depth: int, hidden: int | None = None,
         classes: int | None = None, mlp_layers: dict[str, int] | None = None) -> dict:
    """Preset overrides for one model size: GRU width, MLP units and layers, CNN multiplier."""
    out = {"rssm.deter": deter, "rssm.hidden": hidden or units,
           "encoder.depth": depth, "decoder.depth": depth,
           "encoder.mlp_units": units, "decoder.mlp_units": units}
    if classes:
        out["rssm.classes"] = classes
    layers_of = {"encoder": layers, "decoder": layers, "reward": layers, "cont": layers,
                 "actor": layers, "critic": layers, **(mlp_layers or {})}
    for net in _NETS:
        key = "mlp_layers" if net in ("encoder", "decoder") else "layers"
        out[f"{net}.{key}"] = layers_of[net]
        if net not in ("encoder", "decoder"):
            out[f"{net}.units"] = units
    return out


DEBUG = {
    **size(deter=16, units=16, layers=1, depth=4, hidden=16),
    "rssm.stoch": 4, "rssm.classes": 4, "reward.bins": 15, "critic.bins": 15,
    "train.batch_size": 4, "train.batch_length": 8, "train.horizon": 4,
    "train.prefill": 100, "train.pretrain": 2, "train.train_ratio": 32.0,
    "train.eval_every": 1000, "train.eval_episodes": 1, "train.log_every": 100,
    "train.checkpoint_every": 1000, "train.steps": 400,
}

# The paper's sizes (2023, appendix table): GRU units, dense units, MLP layers, CNN multiplier.
XS = size(deter=256, units=256, layers=1, depth=24)
S = size(deter=512, units=512, layers=2, depth=32)
M = size(deter=1024, units=640, layers=3, depth=48)
L = size(deter=2048, units=768, layers=4, depth=64)

# CPU experiments with vector observations (0.7M world-model params; 0.24-0.32 s per update
# on the two threads of the 2-core machine, results/speed/): GRU 256, 128-unit single-layer
# MLPs, 16 x 16 latent, sequences of 32, train ratio 160 (the released default is 32; DMC used
# 512): 100k env steps of a DMC task with action repeat 2 are 15,500 updates, ~70 min on two
# threads (over 90 on one). Ratio 160 against 128 at 100k on cartpole-balance: 957 +- 30
# (974, 905, 975, 975) vs 774 +- 85, 4 seeds each (README, evidence).
# Critic and actor learn 10x and 3.3x faster than the paper's 3e-5: under Adam an output moves
# per step in proportion to its layer's width, these heads are 4x narrower than size S's and
# get fewer updates per env step; at 3e-5 the critic's value stayed flat (README, evidence).
SMALL = {
    **size(deter=256, units=128, layers=1, depth=16, hidden=128),
    "rssm.stoch": 16, "rssm.classes": 16,
    "train.batch_size": 16, "train.batch_length": 32, "train.train_ratio": 160.0,
    "optim.critic_lr": 3e-4, "optim.actor_lr": 1e-4,
    "train.eval_every": 2500, "train.eval_episodes": 5, "train.checkpoint_every": 10000,
}


@recipe(presets={"debug": DEBUG, "small": SMALL, "xs": XS, "s": S, "m": M, "l": L,
                 "paper": {}})
def dreamerv3() -> Config:
    """arXiv v1 (2023). `paper` is the released default size (XL: GRU 4096, 5 x 1024 MLPs);
    the DMC curves of the paper used size S at train ratio 512."""
    mlp = {"act": "silu", "norm": "layer"}
    return {
        "encoder": {"name": "multi", "depth": 96, "mlp_layers": 5, "mlp_units": 1024,
                    "symlog_inputs": True, **mlp},
        "decoder": {"name": "multi", "depth": 96, "mlp_layers": 5, "mlp_units": 1024,
                    "vector_dist": "symlog_mse", "image_dist": "mse", **mlp},
        "rssm": {"name": "categorical", "stoch": 32, "classes": 32, "deter": 4096,
                 "hidden": 1024, "cell": "norm_gru", "unimix": 0.01, "initial": "learned",
                 "action_clip": 1.0, **mlp},  # both code versions: a * sg(1 / max(1, |a|))
        "kl": {"name": "split", "dyn": 0.5, "rep": 0.1, "free": 1.0},
        "reward": {"name": "twohot", "layers": 5, "units": 1024, "bins": 255,
                   "out_init": "zero", **mlp},
        "cont": {"name": "bernoulli", "layers": 5, "units": 1024, **mlp},
        # the paper: REINFORCE for discrete and continuous actions (the first code release
        # backpropagated through the dynamics for continuous ones: --set actor=dynamics)
        "actor": {"name": "reinforce", "layers": 5, "units": 1024, "dist": "bounded_normal",
                  "min_std": 0.1, "max_std": 1.0, "unimix": 0.01, "ent_scale": 3e-4,
                  "expl_noise": 0.0, **mlp},
        "critic": {"name": "twohot", "layers": 5, "units": 1024, "bins": 255,
                   "out_init": "zero", **mlp},
        "critic_target": {"name": "slow_reg", "rate": 0.02, "every": 1, "scale": 1.0},
        "return_norm": {"name": "percentile", "low": 0.05, "high": 0.95, "decay": 0.99,
                        "limit": 1.0},
        "optim": {"name": "adam", "model_lr": 1e-4, "model_eps": 1e-8, "model_clip": 1000.0,
                  "actor_lr": 3e-5, "critic_lr": 3e-5, "eps": 1e-5, "clip": 100.0},
        "train": {
            "steps": 1_000_000,            # env steps (action repeat counted)
            "batch_size": 16, "batch_length": 64, "horizon": 15,
            "gamma": 1 - 1 / 333, "lam": 0.95,
            "train_ratio": 512.0,          # DMC (proprio and vision); Atari 64, default 32
            "prefill": 1024,               # not in the paper: enough for the first batches
            "pretrain": 1,
            "replay_capacity": 1_000_000,
            "eval_every": 10_000, "eval_episodes": 10, "eval_video": False,
            "log_every": 1000, "checkpoint_every": 20_000,
        },
        "env": {},
    }


def _v2024_size(deter: int, hidden: int, classes: int, units: int, depth: int) -> dict:
    """2024 sizes: encoder/decoder 3 layers, reward/continue 1, actor/critic 3."""
    return size(deter=deter, units=units, layers=3, depth=depth, hidden=hidden,
                classes=classes, mlp_layers={"reward": 1, "cont": 1})


DEBUG_2024 = {**DEBUG, **_v2024_size(16, 16, 4, 16, 4), "rssm.classes": 4,
              "reward.layers": 1, "cont.layers": 1, "actor.layers": 1, "critic.layers": 1,
              "encoder.mlp_layers": 1, "decoder.mlp_layers": 1, "optim.warmup": 10}
SIZE1M = _v2024_size(512, 64, 4, 64, 4)
SIZE12M = _v2024_size(2048, 256, 16, 256, 16)
SIZE25M = _v2024_size(3072, 384, 24, 384, 24)
SIZE50M = _v2024_size(4096, 512, 32, 512, 32)
SMALL_2024 = {**SIZE1M, "train.batch_size": 16, "train.batch_length": 32,
              "train.train_ratio": 32.0, "train.eval_every": 2500,
              "train.eval_episodes": 5, "train.checkpoint_every": 10000}


@recipe(presets={"debug": DEBUG_2024, "small": SMALL_2024, "size1m": SIZE1M,
                 "size12m": SIZE12M, "size25m": SIZE25M, "size50m": SIZE50M, "paper": {}})
def dreamerv3_2024() -> Config:
    """The 2024 revision over the same components: RMSNorm, 64 classes, zero initial state,
    dyn scale 1.0, LaProp + AGC at one learning rate, shallower reward/continue heads.
    `paper` is the released default size (size200m)."""
    cfg = dreamerv3()
    mlp = {"act": "silu", "norm": "rms"}
    for slot in _NETS + ("rssm",):
        cfg[slot].update(mlp)
    cfg["encoder"].update(depth=64, mlp_layers=3, mlp_units=1024)
    cfg["decoder"].update(depth=64, mlp_layers=3, mlp_units=1024)
    cfg["rssm"].update(deter=8192, hidden=1024, classes=64, initial="zeros")
    cfg["kl"].update(dyn=1.0, rep=0.1)
    cfg["reward"].update(layers=1)
    cfg["cont"].update(layers=1)
    cfg["actor"].update(layers=3)
    cfg["critic"].update(layers=3)
    cfg["optim"] = {"name": "laprop", "model_lr": 4e-5, "actor_lr": 4e-5, "critic_lr": 4e-5,
                    "eps": 1e-20, "beta1": 0.9, "beta2": 0.999, "agc": 0.3, "warmup": 1000}
    cfg["train"].update(train_ratio=256.0)  # dmc_vision; dmc_proprio uses 1024 at size1m
    return cfg
