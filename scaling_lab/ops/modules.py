"""The torch forms of the primitive ops (imported when a model is built, never to count it)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from scaling_lab.ops import conv as conv_ops
from scaling_lab.ops import head as head_ops
from scaling_lab.spec.activations import make_activation

BN_EPS = 1e-3  # the reference recipe's BatchNorm settings
BN_MOMENTUM = 0.03


def make_bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a conv built with one (the head's convs; torch types a bias as optional)."""
    if conv.bias is None:
        raise ValueError(f"expected a conv with a bias, got {conv}")
    return conv.bias


def bn_act(channels: int, act: str) -> nn.Sequential:
    """A standalone BatchNorm + activation (after CSP's concat)."""
    return nn.Sequential(make_bn(channels), make_activation(act))


class ConvBNAct(nn.Module):
    """Conv2d -> BatchNorm (training form) or bias (fused form) -> activation."""

    def __init__(self, op: conv_ops.Conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(op.c_in, op.c_out, op.k, op.s, op.p, groups=op.groups, bias=op.bias)
        self.bn = make_bn(op.c_out) if op.bn else nn.Identity()
        self.act = make_activation(op.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class RepConv(nn.Module):
    """Training-form RepConv: act(BN(conv kxk) + BN(conv 1x1) [+ BN(x)]), §4.1."""

    def __init__(self, op: conv_ops.RepConv) -> None:
        super().__init__()
        self.dense = nn.Sequential(
            nn.Conv2d(op.c_in, op.c_out, op.k, op.s, op.k // 2, groups=op.groups, bias=False),
            make_bn(op.c_out),
        )
        self.point = nn.Sequential(
            nn.Conv2d(op.c_in, op.c_out, 1, op.s, 0, groups=op.groups, bias=False),
            make_bn(op.c_out),
        )
        self.identity = make_bn(op.c_in) if op.identity else None
        self.act = make_activation(op.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x) + self.point(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a CPU training batch in channels-last layout.

    torch's CPU max pooling with indices (what autograd keeps for the backward) is 10-30x
    slower on NCHW tensors than on channels-last ones: a tenth of yolov7-tiny's training step
    at 128 px. Values, indices (ties included) and gradients are the same in either layout
    (tests/nn/test_maxpool_layout.py), so only the time changes. Inference, tracing and ONNX
    export keep the plain call: latency tables and exported graphs stay as they were.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.device.type == "cpu" and x.dim() == 4 and not _tracing():
            pooled = super().forward(x.contiguous(memory_format=torch.channels_last))
            return pooled.contiguous()
        return super().forward(x)


def _tracing() -> bool:
    """Inside a TorchScript trace (fvcore's counter) or an ONNX export. ``torch.onnx`` is
    asked only once something imported it (an export does): touching it imports it, which a
    training step has no reason to do."""
    onnx = sys.modules.get("torch.onnx")
    return torch.jit.is_tracing() or (onnx is not None and onnx.is_in_onnx_export())


class ImplicitAdd(nn.Module):
    """YOLOR implicit knowledge added to a feature map (one learned value per channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.implicit


class ImplicitMul(nn.Module):
    """YOLOR implicit knowledge multiplying a feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(1.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.implicit


class Detect(nn.Module):
    """YOLO head. Training: raw per-level maps (B, anchors, H, W, 5 + nc), lead levels then
    auxiliary ones. Eval: decoded boxes (B, N, 5 + nc): xywh in input pixels, objectness and
    class scores after sigmoid (auxiliary convs are not run)."""

    # declared for the type checker: the buffers and the implicit layers (None without them)
    anchors: torch.Tensor
    stride: torch.Tensor
    ia: nn.ModuleList | None
    im: nn.ModuleList | None

    def __init__(self, op: head_ops.Detect) -> None:
        super().__init__()
        self.nc, self.n_levels = op.nc, len(op.c_ins)
        self.n_anchors, self.n_outputs = op.n_anchors, op.n_outputs
        width = self.n_anchors * self.n_outputs
        self.m = nn.ModuleList(nn.Conv2d(c, width, 1) for c in op.c_ins)
        self.aux = nn.ModuleList(nn.Conv2d(c, width, 1) for c in op.aux_c_ins)
        if op.implicit:
            self.ia = nn.ModuleList(ImplicitAdd(c) for c in op.c_ins)
            self.im = nn.ModuleList(ImplicitMul(width) for _ in op.c_ins)
        else:
            self.ia = self.im = None
        anchors = torch.tensor(op.anchors, dtype=torch.float32)
        self.register_buffer("anchors", anchors.view(self.n_levels, -1, 2))  # pixels
        self.register_buffer("stride", torch.tensor(op.strides, dtype=torch.float32))
        self._init_biases()

    def _init_biases(self) -> None:
        """Objectness and class priors (about 8 objects per 640 image, §YOLOv5 recipe)."""
        for convs in (self.m, self.aux):  # ModuleLists of Conv2d (torch types items as Module)
            for conv, stride in zip(cast("Iterable[nn.Conv2d]", convs), self.stride.tolist()):
                bias = conv_bias(conv).detach().view(self.n_anchors, -1)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0
                conv.bias = nn.Parameter(bias.view(-1))

    def _level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.ia is not None and self.im is not None:  # both or neither
            return self.im[i](self.m[i](self.ia[i](x)))
        return self.m[i](x)

    def _shape(self, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = y.shape
        return y.view(b, self.n_anchors, self.n_outputs, h, w).permute(0, 1, 3, 4, 2).contiguous()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        lead = [self._shape(self._level(i, xs[i])) for i in range(self.n_levels)]
        if self.training:
            aux = [self._shape(conv(xs[self.n_levels + i])) for i, conv in enumerate(self.aux)]
            return lead + aux
        return torch.cat([self._decode(i, y) for i, y in enumerate(lead)], 1)

    def _decode(self, i: int, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w, _ = y.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij"
        )
        grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2).to(y.dtype)
        y = y.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[i].to(y.dtype)
        wh = (y[..., 2:4] * 2) ** 2 * self.anchors[i].view(1, -1, 1, 1, 2).to(y.dtype)
        return torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.n_outputs)


class Outputs(nn.Module):
    """A decoupled head's output: the per-level maps in training mode; in eval mode every level
    flattened to (B, H*W, C) and concatenated along the cells, (B, N, C)."""

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        if self.training:
            return list(xs)
        return torch.cat([x.flatten(2).transpose(1, 2) for x in xs], 1)


def chunk(x: torch.Tensor, groups: int, index: int) -> torch.Tensor:
    """Channel slice ``index`` of ``groups`` equal slices."""
    return x.chunk(groups, 1)[index]


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


def reorg(x: torch.Tensor) -> torch.Tensor:
    """Space-to-depth 2x2 in the reference order (even/even, odd/even, even/odd, odd/odd)."""
    return torch.cat(
        [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
    )


def group_concat(xs: list[torch.Tensor], groups: int) -> torch.Tensor:
    """Concatenate so each cardinality group's channels are contiguous (E-ELAN shuffle)."""
    chunks = [x.chunk(groups, 1) for x in xs]
    return torch.cat([c[g] for g in range(groups) for c in chunks], 1)


def merge_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum the ``groups`` channel chunks (E-ELAN merge cardinality)."""
    chunks = x.chunk(groups, 1)
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out + chunk
    return out


def add_all(*xs: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of the inputs (a residual shortcut adds two)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out
