"""Evaluation media: the agent's episode as a video, and the world model's open-loop
prediction beside the truth (observe a few steps, imagine the rest from the actions taken):
a truth | model | error video for pixels, a plot of predicted vs true vectors and rewards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CONTEXT = 5  # observed steps before imagining


def _stack(episode: list[dict[str, np.ndarray]], device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.stack([s[k] for s in episode]))[None].to(device)
            for k in episode[0]}


@torch.no_grad()
def open_loop(agent, episode: list[dict[str, np.ndarray]], length: int = 50) -> dict:
    """Predictions [T, ...] of the decoder and reward head for the first `length` steps:
    posterior for CONTEXT steps, then the prior driven by the recorded actions."""
    wm = agent.wm
    seq = _stack(episode[:length], agent.device)
    T = seq["action"].shape[1]
    ctx = min(CONTEXT, T)
    obs = {k: seq[k] for k in agent.obs_shapes}
    embed = wm.encoder({k: v[:, :ctx] for k, v in obs.items()})
    post, _ = wm.rssm.observe(embed, seq["action"][:, :ctx], seq["is_first"][:, :ctx])
    feats = [wm.rssm.feat(post)[0]]
    state = {k: v[:, -1] for k, v in post.items()}
    for t in range(ctx, T):
        state = wm.rssm.img_step(state, seq["action"][:, t])
        feats.append(wm.rssm.feat(state))
    feat = torch.cat(feats, 0)  # [T, F]
    out = {"reward": (wm.reward(feat).mean.cpu().numpy(), seq["reward"][0].cpu().numpy())}
    for k, dist in wm.decoder(feat).items():
        pred = dist.mean.cpu().numpy()
        truth = obs[k][0].cpu().numpy()
        if k == "image":
            pred = np.clip((pred + 0.5) * 255, 0, 255).astype(np.uint8)
        out[k] = (pred, truth)
    out["context"] = ctx
    return out


def write_video(path: str | Path, frames, fps: int = 30) -> None:
    """Frames [T, H, W, 3] uint8 (an array or a list of frames) as an mp4."""
    import imageio.v2 as imageio

    imageio.mimwrite(str(path), np.stack(frames), fps=fps, macro_block_size=1)


def write_eval_media(directory: Path, env_step: int, frames: list, episode: list,
                     agent) -> list[Path]:
    """Write the episode video and the open-loop prediction for one evaluation."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if not frames and "image" in episode[0]:
        frames = [s["image"] for s in episode]
    frames = [f for f in frames if f is not None]
    if frames:
        path = directory / f"eval_{env_step:09d}.mp4"
        write_video(path, frames)
        written.append(path)
    pred = open_loop(agent, episode)
    if "image" in pred:
        model, truth = pred["image"]
        error = np.abs(model.astype(np.int16) - truth.astype(np.int16)).astype(np.uint8)
        video = np.concatenate([truth, model, error], axis=2)
        path = directory / f"openloop_{env_step:09d}.mp4"
        write_video(path, video, fps=10)
        written.append(path)
    written.append(plot_open_loop(pred, directory / f"openloop_{env_step:09d}.png"))
    return written


def plot_open_loop(pred: dict, path: Path, dims: int = 6) -> Path:
    """Predicted vs true vector dims and reward over time; the context is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("reward", *pred["reward"])]
    if "vector" in pred:
        model, truth = pred["vector"]
        series += [(f"vector[{i}]", model[:, i], truth[:, i])
                   for i in range(min(dims, truth.shape[1]))]
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 1.6 * len(series)), sharex=True,
                             squeeze=False)
    for ax, (name, model, truth) in zip(axes[:, 0], series):
        ax.plot(truth, color="black", label="truth")
        ax.plot(model, color="tab:red", ls="--", label="model")
        ax.axvspan(0, pred["context"] - 1, color="0.9")
        ax.set_ylabel(name)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel(f"policy step (first {pred['context']} observed, rest imagined)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
