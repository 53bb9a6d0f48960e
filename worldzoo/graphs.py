"""The whole learner step as one CUDA graph (`train.cuda_graph=true`, CUDA only).

On a GPU a Dreamer update is thousands of small kernels (5,829 device operations per DreamerV3
XS update), each launched from Python: on an H200 the GPU was busy 18 ms of a 122 ms eager
update (benchmarks/gpu_probe.py). A CUDA graph records the update once (world model,
imagination, actor, critic, optimiser steps) and replays it with one launch: 23 ms per update
there (5.2x), the losses tracking the eager run's. Every update is the same shapes, and
nothing in it reads a GPU value on the host (the sync-free quantiles, the slow critic's
counter on the device, `unroll.start_steps` while capturing) so one recording serves all.

What a graph bakes in at capture must not change between updates: the batch keys and shapes,
the optimiser's hyperparameters (LaProp counts its steps on the host, so `optim=laprop` is
refused), and the parameter and optimiser-state tensors themselves (updated in place; a
resume loads them before the first update, so before the capture).
"""

from __future__ import annotations

import torch

from worldzoo.config import ConfigError

GRAPH_OPTIMS = ("adam",)  # optimisers whose state lives on the device (capturable)


def check_cuda_graph(cfg: dict, device: str) -> None:
    """Fail before a run starts when `train.cuda_graph` cannot hold for this config."""
    if not cfg["train"].get("cuda_graph", False):
        return
    if not str(device).startswith("cuda"):
        raise ConfigError(f"train.cuda_graph=true needs a CUDA device, not {device}: use "
                          "--device cuda, or train.cuda_graph=false")
    optim = cfg.get("optim", {}).get("name")
    if optim not in GRAPH_OPTIMS:
        raise ConfigError(f"train.cuda_graph=true cannot capture optim={optim} (it counts its "
                          f"steps on the host); use optim={GRAPH_OPTIMS[0]} or "
                          "train.cuda_graph=false")


class GraphedTrainStep:
    """`agent.train_step` as a CUDA graph: `warmup` eager updates on a side stream (lazy
    initialisation, optimiser state), then one update captured and replayed for every batch,
    copied into the graph's static inputs. Each call is one real update; metrics are copies."""

    def __init__(self, agent, warmup: int = 3) -> None:
        self.agent, self.warmup, self.calls = agent, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.out: dict[str, torch.Tensor] = {}

    def _capturable(self) -> None:
        """Optimiser state and step counts on the device (set after any load_state_dict, a
        resume's or an undone update's, which replaces the optimisers' groups)."""
        for opt in self.agent.optim.opts.values():
            for group in opt.param_groups:
                group["capturable"] = True

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.calls == 0:
            self._capturable()
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._eager(batch)
        if self.graph is None:
            self._capture(batch)
        if batch.keys() != self.static.keys() or any(
                v.shape != self.static[k].shape for k, v in batch.items()):
            raise TypeError("train.cuda_graph replays one batch shape; got "
                            f"{ {k: tuple(v.shape) for k, v in batch.items()} }, captured "
                            f"{ {k: tuple(v.shape) for k, v in self.static.items()} }")
        for k, v in batch.items():
            self.static[k].copy_(v)
        self.graph.replay()
        return {k: v.clone() for k, v in self.out.items()}

    def _eager(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        main, side = torch.cuda.current_stream(), torch.cuda.Stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            metrics = self.agent.train_step(batch)
        main.wait_stream(side)
        torch.cuda.synchronize()  # the side stream's tensors are used on the main stream next
        return metrics

    def _capture(self, batch: dict[str, torch.Tensor]) -> None:
        self.static = {k: v.clone() for k, v in batch.items()}
        self._capturable()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self.agent.train_step(self.static)
        self.graph = graph
