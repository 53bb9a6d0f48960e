"""Building blocks shared by the components: MLPs and conv stacks with switchable norm/act."""

from __future__ import annotations

import math

import torch
from torch import nn

from worldzoo import gemm

_LOW = (torch.bfloat16, torch.float16)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if autocast made it bf16/fp16, else unchanged (fp64 stays fp64): the
    nets' outputs feed distributions, losses and the recurrent state in full precision, as
    DreamerV3's bf16 compute keeps its distributions in float32."""
    return x.float() if x.dtype in _LOW else x


def compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` in autocast's dtype when autocast is on, else unchanged: features that several nets
    read are cast once instead of once per net (each a full pass over [H, N, feat])."""
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        return x.to(torch.get_autocast_dtype(dev))
    return x


ACTS = {"elu": nn.ELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim (DreamerV3's 2024 revision)."""

    def __init__(self, dim: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


class ChannelNorm(nn.Module):
    """LayerNorm over channels of an NCHW tensor (the conv nets' norm in DreamerV2/V3)."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def act_layer(name: str) -> nn.Module:
    if name not in ACTS:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(ACTS)}")
    return ACTS[name]()


def norm_layer(name: str, dim: int) -> nn.Module:
    """'none' | 'layer' (LayerNorm, eps 1e-3 as DreamerV2/V3) | 'rms' (RMSNorm)."""
    if name == "none":
        return nn.Identity()
    if name == "layer":
        return nn.LayerNorm(dim, eps=1e-3)
    if name == "rms":
        return RMSNorm(dim)
    raise ValueError(f"unknown norm '{name}'; known: none, layer, rms")


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same checkpoints) on the process's CPU GEMM backend
    (`worldzoo.gemm`: oneDNN where MKL is slow); elsewhere exactly `nn.Linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gemm.linear(x, self.weight, self.bias)


def linear_block(inp: int, out: int, act: str, norm: str,
                 linear: type[nn.Linear] = Linear) -> list[nn.Module]:
    """Linear (no bias when normed) -> norm -> act."""
    return [linear(inp, out, bias=norm == "none"), norm_layer(norm, out), act_layer(act)]


class MLP(nn.Sequential):
    """`layers` hidden blocks of `units`, then an optional linear output of size `out`;
    `linear` is the layer class (`unroll.StepLinear` for nets run at every step of a
    recurrence)."""

    def __init__(
        self, inp: int, out: int | None, layers: int, units: int,
        act: str = "elu", norm: str = "none", out_init: str = "default",
        linear: type[nn.Linear] = Linear,
    ) -> None:
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += linear_block(inp if i == 0 else units, units, act, norm, linear)
        last = units if layers else inp
        if out is not None:
            head = linear(last, out)
            init_output(head, out_init)
            mods.append(head)
        super().__init__(*mods)
        self.out_dim = out if out is not None else last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return full_precision(super().forward(x))


def init_output(layer: nn.Linear | nn.ConvTranspose2d, how: str) -> None:
    """'default' (PyTorch) | 'zero' (DreamerV3 zero-initialises reward and critic outputs)."""
    if how == "zero":
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif how != "default":
        raise ValueError(f"unknown out_init '{how}'; known: default, zero")


class ConvEncoder(nn.Module):
    """Strided 4x4 convs halving a square image down to `minres`, channels doubling from
    `depth` (DreamerV2/V3 layout); input uint8 HxWxC, output flat features."""

    def __init__(self, shape: tuple[int, int, int], depth: int, act: str, norm: str,
                 minres: int = 4) -> None:
        super().__init__()
        h, w, c = shape
        if h != w or h < 2 * minres or 2 ** round(math.log2(h)) != h:
            raise ValueError(f"image must be square with a power-of-two side >= {2 * minres}, "
                             f"got {h}x{w}; set env.size to 64 (or 32, 16, ...)")
        stages = int(round(math.log2(h / minres)))
        mods: list[nn.Module] = []
        ch = c
        for i in range(stages):
            nxt = depth * 2**i
            mods += [nn.Conv2d(ch, nxt, 4, 2, 1, bias=norm == "none"),
                     ChannelNorm(nxt) if norm != "none" else nn.Identity(), act_layer(act)]
            ch = nxt
        self.net = nn.Sequential(*mods)
        self.out_dim = ch * minres * minres

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Linear to a `minres` grid, then transposed 4x4 convs doubling up to the image size.
    Returns the mean image in [-0.5, 0.5] space (targets are image / 255 - 0.5)."""

    def __init__(self, inp: int, shape: tuple[int, int, int], depth: int, act: str, norm: str,
                 minres: int = 4) -> None:
        super().__init__()
        h, _, c = shape
        stages = int(round(math.log2(h / minres)))
        self.minres, self.ch = minres, depth * 2 ** (stages - 1)
        self.shape = shape
        self.inp = Linear(inp, self.ch * minres * minres)
        mods: list[nn.Module] = []
        ch = self.ch
        for i in range(stages):
            last = i == stages - 1
            nxt = c if last else ch // 2
            mods.append(nn.ConvTranspose2d(ch, nxt, 4, 2, 1, bias=last or norm == "none"))
            if not last:
                mods += [ChannelNorm(nxt) if norm != "none" else nn.Identity(), act_layer(act)]
            ch = nxt
        self.net = nn.Sequential(*mods)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = self.inp(feat.reshape(-1, feat.shape[-1]))
        x = x.reshape(-1, self.ch, self.minres, self.minres)
        x = x.contiguous(memory_format=torch.channels_last)
        x = full_precision(self.net(x)).permute(0, 2, 3, 1)
        return x.reshape(*lead, *self.shape)
