"""Nearest-neighbour doubling followed by a 3x3 convolution, computed at the input's resolution.

A decoder that doubles its resolution by repeating each pixel 2x2 and then convolving with a
3x3 kernel (padding 1) spends most of its arithmetic on those convolutions: 9 multiply-adds per
output pixel, input channel and output channel, over four times the input's pixels. Each output
pixel sees only a 2x2 window of the input, though, and which window depends on the pixel's
phase (its row and column parity): for phase 0 along an axis the kernel's taps -1 | 0, +1 fall
on input rows i-1 | i, for phase 1 the taps -1, 0 | +1 fall on i | i+1. Summing the taps that
land on the same input pixel gives four 2x2 kernels, one per phase, and the same output from
4 multiply-adds per output pixel instead of 9 (16/36 of the work), without the repeated image.

`NearestUpsampleConv` is that computation, exported in place of the two layers. The graph
keeps the 3x3 kernel and derives the 2x2 ones from it by products of constants, which
onnxruntime folds once when it creates the session. Only the order of the floating-point
additions changes; the parity gate compares the exported graph with the original layers in
torch as for any other graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# PHASE_TAPS[phase][tap][k]: which of the kernel's three taps (k) add up to each of the two
# taps of the 2x2 kernel of an output phase, along one axis.
PHASE_TAPS = ((((1, 0, 0), (0, 1, 1))), (((1, 1, 0), (0, 0, 1))))


def qualifies(conv: nn.Module) -> bool:
    """A plain 3x3 convolution with padding 1 and stride 1 (zero padding, no groups or dilation)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.padding == (1, 1)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


class NearestUpsampleConv(nn.Module):
    """`conv(F.interpolate(x, scale_factor=2, mode="nearest"))` for a `conv` that `qualifies`,
    as four 2x2 convolutions of x (one per output phase) interleaved into the doubled image."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not qualifies(conv):
            raise ValueError(f"NearestUpsampleConv needs a 3x3 convolution with padding 1 and stride 1, got {conv}")
        self.out_channels = conv.out_channels
        # The 3x3 kernel is kept and the four 2x2 kernels are computed from it in the graph, by
        # products of constants that onnxruntime folds when it creates the session: the file
        # holds 9 numbers per kernel, not 16.
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)  # [O, I, 3, 3]
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        taps = torch.tensor(PHASE_TAPS, dtype=conv.weight.dtype)  # [phase, tap, k]
        # spread[2a + b][(ky, kx), (ty, tx)] = taps[a, ty, ky] * taps[b, tx, kx]: each phase's 2x2
        # kernels come from one product, [O * I, 9] x [9, 4], already in Conv's layout. (Products
        # batched over the O x I blocks of 3x3 took onnxruntime about 40 ms a layer to fold.)
        self.register_buffer("spread", torch.einsum("aty,bux->abyxtu", taps, taps).reshape(4, 9, 4))

    def phase_kernel(self, a: int, b: int) -> torch.Tensor:
        """[O, I, 2, 2]: the kernel of output phase (a, b), K[o, i, ty, tx] = the sum over
        (ky, kx) of taps[a, ty, ky] * taps[b, tx, kx] * w[o, i, ky, kx]."""
        o, i = self.weight.shape[:2]
        return torch.matmul(self.weight.reshape(o * i, 9), self.spread[2 * a + b]).reshape(o, i, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                # Phase (a, b) reads rows i-1+a, i+a and columns j-1+b, j+b of x: zero padding of
                # one row above (a = 0) or below (a = 1), and likewise for columns.
                padded = F.pad(x, (1 - b, b, 1 - a, a))
                phases.append(F.conv2d(padded, self.phase_kernel(a, b), self.bias))
        # out[n, o, 2i + a, 2j + b] = phases[2a + b][n, o, i, j]
        rows = [torch.stack(phases[2 * a : 2 * a + 2], dim=-1) for a in (0, 1)]  # [n, O, h, w, 2] each
        return torch.stack(rows, dim=-3).reshape(n, self.out_channels, 2 * h, 2 * w)


def _doubles_by_repeating(module: nn.Module) -> bool:
    return type(module) is nn.Upsample and module.mode == "nearest" and module.size is None and module.scale_factor in (2, 2.0, (2.0, 2.0))


class _DoublingLayer(nn.Module):
    """A layer with diffusers' Upsample2D calling convention (`forward(x, output_size=None)`):
    NearestUpsampleConv for the plain doubling, the original layer for an explicit size."""

    def __init__(self, original: nn.Module, conv: nn.Conv2d):
        super().__init__()
        self.original = original
        self.doubling = NearestUpsampleConv(conv)

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        if output_size is not None or args or kwargs:
            return self.original(hidden_states, output_size, *args, **kwargs)
        return self.doubling(hidden_states)


def _diffusers_doubling_conv(module: nn.Module) -> nn.Conv2d | None:
    """The convolution of a diffusers Upsample2D that repeats pixels 2x2 and then convolves (the
    up blocks of AutoencoderKL), or None for any other layer or configuration."""
    if type(module).__name__ != "Upsample2D":
        return None
    if not getattr(module, "use_conv", False) or getattr(module, "use_conv_transpose", True) or not getattr(module, "interpolate", False):
        return None
    if getattr(module, "norm", None) is not None:
        return None
    conv = getattr(module, "conv", None) if getattr(module, "name", None) == "conv" else getattr(module, "Conv2d_0", None)
    return conv if conv is not None and qualifies(conv) else None


def folded_copy(module: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """What an exporter writes to ONNX for `module`, and how many doubling layers it folded: a
    copy with its doubling layers folded (`fold_doubling`) when that removes at least MIN_SAVING
    of the multiply-adds of a forward pass on `example`, else `module` itself (0 folded). The
    parity gate compares the graph with the original `module` either way."""
    import copy

    folded = copy.deepcopy(module).eval()
    count = fold_doubling(folded)
    if count and 1 - multiply_adds(folded, example) / max(multiply_adds(module, example), 1) >= MIN_SAVING:
        return folded, count
    return module, 0


def fold_doubling(model: nn.Module) -> int:
    """Replace, in place, every nearest 2x doubling followed by a qualifying 3x3 convolution with
    NearestUpsampleConv: consecutive `nn.Upsample` and `nn.Conv2d` in an `nn.Sequential` (the
    trainer's resize up blocks, AutoencoderTiny's decoder) and diffusers' `Upsample2D` layers
    (AutoencoderKL's decoder). Returns how many were replaced. For export only: the new layers
    hold copies of the weights, so train the original model, not this one."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            conv = _diffusers_doubling_conv(child)
            if conv is not None:
                setattr(parent, name, _DoublingLayer(child, conv))
                count += 1
        if isinstance(parent, nn.Sequential):
            keys = list(parent._modules)
            for first, second in zip(keys, keys[1:]):
                up, conv = parent._modules[first], parent._modules[second]
                if _doubles_by_repeating(up) and qualifies(conv):
                    parent._modules[first] = NearestUpsampleConv(conv)
                    parent._modules[second] = nn.Identity()
                    count += 1
    return count


# Fold only where it pays: interleaving the four phases costs copies (and conversions out of
# onnxruntime's blocked layout, in which it repeats pixels cheaply) that the repeated image did
# not, so the saved multiply-adds must be a real share of the decoder's. Measured 2026-12-07,
# 2 threads, decoders alone: AutoencoderTiny (TAESD) saves 10% of its multiply-adds and ran no
# faster folded (2.78 against 2.82 s at 1024x1024) with a 48% higher peak; Stable Diffusion's
# AutoencoderKL saves 16% and ran 1.17x faster at 512x512; the bundled Fashion-MNIST and emoji
# decoders save 55% (Fashion-MNIST: 1.46x faster at batch 16).
MIN_SAVING = 0.125


def multiply_adds(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of `module` on `example`: its convolutions (the
    folded doubling layers' four 2x2 ones included) and linear layers."""
    total = [0]

    def conv(m, inputs, output):
        total[0] += output.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inputs, output):
        total[0] += output.numel() * m.in_features

    def folded(m, inputs, output):
        total[0] += output.numel() * m.weight.shape[1] * 4  # four 2x2 taps per output value

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, NearestUpsampleConv):
            hooks.append(m.register_forward_hook(folded))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return total[0]
