"""Observation encoders and decoders (slots `encoder`, `decoder`). `multi` handles whatever the
env gives: a conv stack for `image`, an MLP for `vector`; `mlp` and `cnn` take one of them."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.dists import MSEDist, NormalDist, symlog
from worldzoo.nets import MLP, ConvDecoder, ConvEncoder
from worldzoo.registry import define_slot, register

define_slot("encoder", "observation encoder: mlp (vectors), cnn (pixels), multi (both)")
define_slot("decoder", "observation decoder: mlp, cnn, multi, none (decoder-free)")

Shapes = dict[str, tuple[int, ...]]


def _pick(obs_space: Shapes, keys: tuple[str, ...], slot: str, name: str) -> Shapes:
    picked = {k: v for k, v in obs_space.items() if k in keys}
    if not picked:
        raise ValueError(
            f"{slot}={name} needs an observation among {', '.join(keys)} but the env gives "
            f"{', '.join(obs_space) or 'none'}; use {slot}=multi or set env.obs")
    return picked


class MultiEncoder(nn.Module):
    """Concatenates a conv embedding of `image` and an MLP embedding of `vector`."""

    keys = ("image", "vector")

    def __init__(self, obs_space: Shapes, depth: int = 32, mlp_layers: int = 3,
                 mlp_units: int = 400, act: str = "elu", norm: str = "none",
                 symlog_inputs: bool = False) -> None:
        super().__init__()
        shapes = _pick(obs_space, self.keys, "encoder", type(self).__name__)
        self.symlog_inputs = symlog_inputs
        self.cnn = ConvEncoder(shapes["image"], depth, act, norm) if "image" in shapes else None
        self.mlp = (MLP(shapes["vector"][0], None, mlp_layers, mlp_units, act, norm)
                    if "vector" in shapes else None)
        self.out_dim = (self.cnn.out_dim if self.cnn else 0) + (self.mlp.out_dim if self.mlp else 0)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = []
        if self.cnn is not None:
            outs.append(self.cnn(obs["image"]))
        if self.mlp is not None:
            vec = obs["vector"]
            outs.append(self.mlp(symlog(vec) if self.symlog_inputs else vec))
        return torch.cat(outs, -1) if len(outs) > 1 else outs[0]


register("encoder", "multi")(MultiEncoder)


@register("encoder", "mlp")
class MLPEncoder(MultiEncoder):
    """Vector observations only."""

    keys = ("vector",)


@register("encoder", "cnn")
class CNNEncoder(MultiEncoder):
    """Pixel observations only."""

    keys = ("image",)


class MultiDecoder(nn.Module):
    """Reconstructs `image` (`image_dist`: unit Gaussian on image/255 - 0.5 as V1/V2, or mse
    as V3) and `vector` (`vector_dist`: normal as V1, mse as V2, or symlog_mse as V3). One loss
    term, `decoder`."""

    keys = ("image", "vector")

    def __init__(self, feat: int, obs_space: Shapes, depth: int = 32, mlp_layers: int = 3,
                 mlp_units: int = 400, act: str = "elu", norm: str = "none",
                 vector_dist: str = "normal", image_dist: str = "normal",
                 scale: float = 1.0) -> None:
        super().__init__()
        shapes = _pick(obs_space, self.keys, "decoder", type(self).__name__)
        if image_dist not in ("normal", "mse"):
            raise ValueError(f"unknown decoder.image_dist '{image_dist}'; known: normal, mse")
        self.image_dist = image_dist
        if vector_dist not in ("normal", "mse", "symlog_mse"):
            raise ValueError(f"unknown decoder.vector_dist '{vector_dist}'; "
                             "known: normal, mse, symlog_mse")
        self.vector_dist, self.scales = vector_dist, {"decoder": scale}
        self.cnn = (ConvDecoder(feat, shapes["image"], depth, act, norm)
                    if "image" in shapes else None)
        self.mlp = (MLP(feat, shapes["vector"][0], mlp_layers, mlp_units, act, norm)
                    if "vector" in shapes else None)

    def forward(self, feat: torch.Tensor) -> dict[str, NormalDist | MSEDist]:
        dists: dict[str, NormalDist | MSEDist] = {}
        if self.cnn is not None:
            pred = self.cnn(feat)
            dists["image"] = (NormalDist(pred, 3) if self.image_dist == "normal"
                              else MSEDist(pred, 3))
        if self.mlp is not None:
            pred = self.mlp(feat)
            dists["vector"] = (NormalDist(pred, 1) if self.vector_dist == "normal" else
                               MSEDist(pred, 1, "symlog" if self.vector_dist == "symlog_mse"
                                       else "none"))
        return dists

    @staticmethod
    def target(key: str, value: torch.Tensor) -> torch.Tensor:
        """The decoder's target for an observation: image in [-0.5, 0.5], vectors as given."""
        return value.float() / 255.0 - 0.5 if key == "image" else value

    def loss(self, feat: torch.Tensor, obs: dict[str, torch.Tensor]):
        """(losses, metrics): summed NLL of every decoded key, per-key values as metrics."""
        dists = self(feat)
        parts = {k: d.loss(self.target(k, obs[k])) for k, d in dists.items()}
        total = sum(p.mean() for p in parts.values())
        return {"decoder": total}, {f"recon_{k}": p.mean().detach() for k, p in parts.items()}


register("decoder", "multi")(MultiDecoder)


@register("decoder", "mlp")
class MLPDecoder(MultiDecoder):
    """Vector observations only."""

    keys = ("vector",)


@register("decoder", "cnn")
class CNNDecoder(MultiDecoder):
    """Pixel observations only."""

    keys = ("image",)


@register("decoder", "none")
class NoDecoder(nn.Module):
    """Decoder-free: no reconstruction loss (the latent is shaped by reward, continue, KL)."""

    def __init__(self, feat: int, obs_space: Shapes) -> None:
        super().__init__()
        self.scales: dict[str, float] = {}

    def forward(self, feat: torch.Tensor) -> dict:
        return {}

    def loss(self, feat: torch.Tensor, obs: dict[str, torch.Tensor]):
        return {}, {}
