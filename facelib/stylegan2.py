"""StyleGAN2 generator in plain PyTorch (no compiled ops), in the rosinality/stylegan2-pytorch layout.

The module tree and parameter names match rosinality's ``Generator`` exactly, so a ``g_ema``
state dict loads with ``strict=True``; the maths is the same network (see
``../shared/refs/stylegan2/README.md`` in the development tree for the conventions):

* mapping: PixelNorm, then ``n_mlp`` equalised linear layers (lr multiplier 0.01) with a
  fused bias + leaky ReLU(0.2) x sqrt(2);
* synthesis: const 4x4 input, per resolution an upsampling modulated 3x3 conv (transposed
  conv, stride 2, then a [1,3,3,1] blur), a modulated 3x3 conv and a modulated 1x1 ToRGB
  (no demodulation) whose outputs are summed through FIR-upsampled skips.

W+ rows: conv1 takes row 0, to_rgb1 row 1, upsampling block k takes rows 1+2k and 2+2k,
``to_rgbs[k]`` row 3+2k; ``n_latent = 2 log2(resolution) - 2``.

Speed: on CPU the modulated convs run "split" by default (scale the input by the style,
convolve with the shared weight, scale the output by the demodulation factor). It is the
same network as the grouped-conv formulation (``fused_modconv=True``, rosinality's) but a
backward pass w.r.t. W+ needs no per-sample weight gradient, which is what projection and
face swap spend their time on.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError, check_shape

__all__ = [
    "StyleGAN2Generator",
    "BLUR_TAPS",
    "SQRT2",
    "make_kernel",
    "upfirdn2d",
    "fused_leaky_relu",
    "modulated_conv2d",
    "default_channels",
    "NoiseSpec",
]

#: ``noise`` of :meth:`StyleGAN2Generator.synthesis`: None, "random", "none" or per-layer maps.
NoiseSpec = Union[None, str, Sequence[Optional[torch.Tensor]]]

#: The FIR taps of every StyleGAN2 generator resampling step (Karras et al. 2020).
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
#: The gain of the leaky-ReLU activations (``sqrt(2)``).
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------
# Ops
# ----------------------------------------------------------------------------------------

def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias, negative_slope) * scale``; ``bias`` (C,) broadcasts over dim 1."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.view(shape)
    return F.leaky_relu(x, negative_slope) * scale


def _pad_or_crop(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) the last two dims; pad = (x0, x1, y0, y1)."""
    x = F.pad(x, [max(p, 0) for p in pad])
    x0, x1, y0, y1 = (max(-p, 0) for p in pad)
    return x[..., y0:x.shape[-2] - y1, x0:x.shape[-1] - x1]


def _upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int,
                   pad: tuple[int, int, int, int]) -> torch.Tensor:
    """General (non-separable) reference: zero-insert, pad, true 2-D convolution, decimate."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = _pad_or_crop(x, pad)
    k = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, k, groups=c)
    return x[..., ::down, ::down]


def _fir1d(x: torch.Tensor, taps: torch.Tensor, dim: int, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """Separable FIR pass along ``dim`` (-1 or -2): zero insertion, pad/crop, depthwise 1-D conv, decimation.

    Two 1-D depthwise convolutions cost 2K instead of K^2 multiply-adds per pixel; on CPU
    they are also faster than shifted-slice sums, whose backward fills and copies whole maps.
    """
    if up > 1:  # zero insertion: (..., L, W) -> (..., L, up, W) -> (..., L*up, W)
        shape = list(x.shape)
        shape[dim] *= up
        if dim == -1:
            x = F.pad(x.unsqueeze(-1), [0, up - 1])
        else:
            x = F.pad(x.unsqueeze(-2), [0, 0, 0, up - 1])
        x = x.reshape(shape)
    pad4 = (pad[0], pad[1], 0, 0) if dim == -1 else (0, 0, pad[0], pad[1])
    x = _pad_or_crop(x, pad4)
    c = x.shape[1]
    k = taps.flip(0).to(x.dtype)
    k = k.view(1, 1, 1, -1) if dim == -1 else k.view(1, 1, -1, 1)
    stride = (1, down) if dim == -1 else (down, 1)
    return F.conv2d(x, k.repeat(c, 1, 1, 1), stride=stride, groups=c)


def _separable_taps(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(taps_y, taps_x) with outer(taps_y, taps_x) == kernel, or None if the kernel is not rank 1."""
    if kernel.ndim == 1:
        return kernel, kernel
    total = kernel.sum()
    if kernel.ndim != 2 or float(total) == 0.0:
        return None
    ty, tx = kernel.sum(1), kernel.sum(0) / total
    if not torch.allclose(torch.outer(ty, tx), kernel, rtol=1e-6, atol=1e-7):
        return None
    return ty, tx


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1,
              pad: Sequence[int] = (0, 0), impl: str = "auto") -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with a FIR ``kernel``, downsample.

    Args:
        x: (N, C, H, W) float.
        kernel: (kh, kw) FIR kernel (a true convolution: the kernel is flipped), or (k,) taps
            used separably along both axes.
        up, down: integer factors, the same along both axes.
        pad: (p0, p1) for both axes or (x0, x1, y0, y1); negative values crop.
        impl: "ref" (one 2-D depthwise conv, any kernel), "separable" (two 1-D depthwise convs;
            rank-1 kernels) or "auto" (separable when the kernel is rank 1; 1-D taps skip the test).
    Returns:
        (N, C, (H*up + y0 + y1 - kh) // down + 1, (W*up + x0 + x1 - kw) // down + 1).
    """
    check_shape("upfirdn2d: x (N, C, H, W)", x, (None, None, None, None))
    if impl not in ("auto", "ref", "separable"):
        raise InputError(f"upfirdn2d: impl must be 'auto', 'ref' or 'separable', got {impl!r}")
    pad4 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
    taps = _separable_taps(kernel) if impl in ("auto", "separable") else None
    if taps is None:
        if impl == "separable":
            raise InputError("upfirdn2d: impl='separable' needs a rank-1 kernel")
        k2 = torch.outer(kernel, kernel) if kernel.ndim == 1 else kernel
        return _upfirdn2d_ref(x, k2, up, down, pad4)
    ty, tx = taps
    x = _fir1d(x, tx.to(x.dtype), -1, up, down, (pad4[0], pad4[1]))
    return _fir1d(x, ty.to(x.dtype), -2, up, down, (pad4[2], pad4[3]))


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     upsample: bool = False, fused: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Modulated (and optionally demodulated) convolution, without bias, noise or blur.

    Args:
        x: (N, I, H, W) input.
        weight: (O, I, k, k) effective weight (equalised-lr gain already applied).
        styles: (N, I) per-sample input scales.
        demodulate: divide each output channel by its weight norm.
        upsample: transposed conv with stride 2 and no padding, giving (2H + k - 2) pixels;
            the caller applies the blur.
        fused: one grouped convolution with per-sample weights (rosinality's formulation);
            otherwise scale input and output around one shared convolution (same result).
    Returns:
        (N, O, H', W') with H' = H - k + 1 + 2 * (k // 2) (same padding) or the upsampled size.
    """
    n, in_ch, h, w = x.shape
    out_ch, _, k, _ = weight.shape
    demod = None
    if demodulate:
        # [N, O]: rsqrt(sum_{i,kh,kw} (W[o,i] * s[n,i])^2 + eps)
        demod = torch.rsqrt((styles.square() @ weight.square().sum((2, 3)).t()) + eps)
    if fused:
        wgt = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        if demod is not None:
            wgt = wgt * demod[:, :, None, None, None]
        x = x.reshape(1, n * in_ch, h, w)
        if upsample:
            wgt = wgt.transpose(1, 2).reshape(n * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(x, wgt, stride=2, padding=0, groups=n)
        else:
            out = F.conv2d(x, wgt.reshape(n * out_ch, in_ch, k, k), padding=k // 2, groups=n)
        return out.reshape(n, out_ch, out.shape[-2], out.shape[-1])
    x = x * styles[:, :, None, None]
    if upsample:
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)
    else:
        out = F.conv2d(x, weight, padding=k // 2)
    if demod is not None:
        out = out * demod[:, :, None, None]
    return out


# ----------------------------------------------------------------------------------------
# Layers (names follow rosinality's so state dicts load strictly)
# ----------------------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """x * rsqrt(mean(x^2) + 1e-8) over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; stored values are divided by ``lr_mul``."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        if self.activation:
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        return out + self.bias * self.lr_mul

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


def _make_taps(factor: int) -> torch.Tensor:
    """The [1,3,3,1] taps normalised to sum ``factor``: (4,)."""
    k = torch.tensor(BLUR_TAPS)
    return k / k.sum() * factor


def make_kernel(factor: int) -> torch.Tensor:
    """The (4, 4) FIR kernel outer(taps, taps), summing to ``factor ** 2`` (rosinality's buffer)."""
    k = torch.tensor(BLUR_TAPS)
    k = torch.outer(k, k)
    return k / k.sum() * factor ** 2


class _FIR(nn.Module):
    """Holds a FIR ``kernel`` buffer (stored in checkpoints) and its 1-D ``taps`` (derived, not stored).

    Passing the taps lets :func:`upfirdn2d` skip its separability test, which on CUDA costs
    host syncs on every call. Loading a kernel other than outer(taps, taps) drops the taps,
    and the kernel is then used as loaded.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(factor))
        self.register_buffer("taps", _make_taps(factor), persistent=False)
        self.register_load_state_dict_post_hook(_FIR._match_taps)

    @staticmethod
    def _match_taps(module: "_FIR", incompatible_keys) -> None:
        taps = _make_taps(module.factor).to(module.kernel)
        module.taps = taps if torch.equal(torch.outer(taps, taps), module.kernel) else None

    def fir(self) -> torch.Tensor:
        return self.kernel if self.taps is None else self.taps


class Blur(_FIR):
    """FIR blur with fixed padding."""

    def __init__(self, pad: tuple[int, int], factor: int = 1) -> None:
        super().__init__(factor)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.fir(), pad=self.pad)


class Upsample(_FIR):
    """2x FIR upsampling of the RGB skip path: upfirdn2d(up=2, pad=(2, 1))."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.fir(), up=2, pad=(2, 1))


class ModulatedConv2d(nn.Module):
    """Style-modulated conv; ``upsample`` adds a stride-2 transposed conv followed by a blur."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, *, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.fused = False
        if upsample:
            self.blur = Blur(pad=(1, 1), factor=2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # x [N,I,H,W], w [N,D]
        styles = self.modulation(w)  # [N, I]
        out = modulated_conv2d(x, self.weight[0] * self.scale, styles, demodulate=self.demodulate,
                               upsample=self.upsample, fused=self.fused)
        if self.upsample:
            out = self.blur(out)
        return out

    def extra_repr(self) -> str:
        _, o, i, k, _ = self.weight.shape
        return f"{i} -> {o}, k={k}, upsample={self.upsample}, demodulate={self.demodulate}"


class NoiseInjection(nn.Module):
    """x + weight * noise, noise (1 or N, 1, H, W) broadcast over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) x sqrt(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated conv + noise + bias/activation (+ optional clamp of the output)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)
        self.clamp: float | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.activate(self.noise(self.conv(x, w), noise))
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        return out


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias, plus the upsampled skip."""

    def __init__(self, in_ch: int, style_dim: int, *, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp: float | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 start of synthesis, (1, C, 4, 4), expanded to the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class _Noises(nn.Module):
    """Holds ``noise_0 .. noise_{L-1}`` buffers (the checkpoint's fixed per-layer noise)."""


def default_channels(resolution: int, channel_multiplier: float = 2, channel_max: int = 512) -> dict[int, int]:
    """rosinality's channel table {4: 512, ..., 64: 256*m, 128: 128*m, ...}, capped at ``channel_max``."""
    table = {4: 512, 8: 512, 16: 512, 32: 512}
    res = 64
    while res <= resolution:
        table[res] = int(16384 // res * channel_multiplier)
        res *= 2
    return {r: max(1, min(c, channel_max)) for r, c in table.items() if r <= resolution}


# ----------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------

class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator (config-f architecture, "skip" RGB outputs).

    Args:
        resolution: output side, a power of two >= 8.
        style_dim: width of z, w and every W+ row.
        n_mlp: number of mapping layers.
        channel_multiplier: rosinality's width table multiplier (2 for config-f).
        channels: explicit {resolution: channels} widths (overrides the table), as NVIDIA-trained
            or small generators have.
        channel_max: caps every layer's width (small configurations for tests).
        lr_mlp: mapping learning-rate multiplier (0.01 in every released model).
        conv_clamp: clamp every conv / ToRGB output to +-conv_clamp (NVIDIA ADA-trained files).
        seed: seed for the random initialisation (deterministic when given).

    Attributes:
        resolution, style_dim, n_latent, num_layers, channels, latent_avg ((style_dim,) or None).
    """

    def __init__(self, resolution: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 channels: Mapping[int, int] | None = None, channel_max: int = 512, lr_mlp: float = 0.01,
                 conv_clamp: float | None = None, seed: int | None = None) -> None:
        super().__init__()
        log_res = int(round(math.log2(resolution))) if resolution > 0 else 0
        if resolution < 8 or 2 ** log_res != resolution:
            raise InputError(f"StyleGAN2Generator: resolution must be a power of two >= 8, got {resolution}")
        if channels is None:
            channels = default_channels(resolution, channel_multiplier, channel_max)
        else:
            channels = {int(r): int(c) for r, c in channels.items()}
            missing = [2 ** i for i in range(2, log_res + 1) if 2 ** i not in channels]
            if missing:
                raise InputError(f"StyleGAN2Generator: channels has no width for resolutions {missing}")
        self.resolution = resolution
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channels = dict(channels)
        self.log_size = log_res
        self.num_layers = 2 * log_res - 3
        self.n_latent = 2 * log_res - 2
        self.conv_clamp = conv_clamp
        self.latent_avg: torch.Tensor | None = None

        rng_state = None
        if seed is not None:
            rng_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        try:
            self.style = nn.Sequential(PixelNorm(), *[
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)])
            self.input = ConstantInput(channels[4])
            self.conv1 = StyledConv(channels[4], channels[4], style_dim)
            self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
            self.convs = nn.ModuleList()
            self.to_rgbs = nn.ModuleList()
            self.noises = _Noises()
            for i in range(self.num_layers):
                r = 2 ** ((i + 5) // 2)
                self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
            in_ch = channels[4]
            for i in range(3, log_res + 1):
                out_ch = channels[2 ** i]
                self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
                self.convs.append(StyledConv(out_ch, out_ch, style_dim))
                self.to_rgbs.append(ToRGB(out_ch, style_dim))
                in_ch = out_ch
        finally:
            if rng_state is not None:
                torch.random.set_rng_state(rng_state)
        self.set_conv_clamp(conv_clamp)
        self.set_fused_modconv(False)
        # None = by device: NHWC activations on CPU (oneDNN: 1.2-1.3x faster forward+backward at
        # 256 px, benchmarks/generator.py), NCHW on CUDA (cuDNN was faster in NCHW on an H200)
        self.channels_last: bool | None = None

    # -- configuration ------------------------------------------------------------------
    def set_conv_clamp(self, value: float | None) -> None:
        """Clamp every conv and ToRGB output to +-value (None disables)."""
        self.conv_clamp = value
        for m in self.modules():
            if isinstance(m, (StyledConv, ToRGB)):
                m.clamp = value

    def set_fused_modconv(self, fused: bool) -> None:
        """Use rosinality's grouped-conv formulation (True) or the split one (False, faster backward)."""
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = bool(fused)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return {"resolution": self.resolution, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channels": dict(self.channels), "conv_clamp": self.conv_clamp}

    @property
    def device(self) -> torch.device:
        return self.input.input.device

    # -- mapping ------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, style_dim) -> w (N, style_dim)."""
        check_shape("mapping: z", z, (None, self.style_dim))
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, *, seed: int = 0, batch: int = 4096) -> torch.Tensor:
        """Average w over ``n`` samples of z ~ N(0, I) drawn with ``seed``: (style_dim,)."""
        g = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=self.device)
        done = 0
        while done < n:
            k = min(batch, n - done)
            z = torch.randn(k, self.style_dim, generator=g).to(self.device)
            total += self.mapping(z).double().sum(0)
            done += k
        return (total / n).float()

    # -- noise --------------------------------------------------------------------------
    @property
    def noise_buffers(self) -> list[torch.Tensor]:
        """The checkpoint's stored per-layer noise maps: num_layers tensors (1, 1, r, r)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, batch: int = 1, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) noise maps: num_layers tensors (batch, 1, r, r)."""
        out = []
        for buf in self.noise_buffers:
            r = buf.shape[-1]
            out.append(torch.randn(batch, 1, r, r, generator=generator).to(self.device))
        return out

    def _resolve_noise(self, noise: NoiseSpec, batch: int) -> list[torch.Tensor | None]:
        if noise is None:
            return self.noise_buffers
        if isinstance(noise, str):
            if noise == "random":
                return [torch.randn(batch, 1, b.shape[-2], b.shape[-1], device=b.device, dtype=b.dtype)
                        for b in self.noise_buffers]
            if noise == "none":
                return [None] * self.num_layers
            raise InputError(f"synthesis: noise must be None, 'random', 'none' or a list, got {noise!r}")
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise InputError(f"synthesis: expected {self.num_layers} noise tensors, got {len(noise)}")
        return [b if n is None else n for n, b in zip(noise, self.noise_buffers)]

    # -- synthesis ----------------------------------------------------------------------
    def synthesis(self, wplus: torch.Tensor, noise: NoiseSpec = None) -> torch.Tensor:
        """W+ -> image.

        Args:
            wplus: (N, n_latent, style_dim); a (N, style_dim) w is broadcast to every row.
            noise: None = the stored noise buffers (deterministic); "random" = fresh N(0, 1);
                "none" = no noise; or a list of num_layers tensors (1 or N, 1, r, r) (None
                entries use the stored buffer).
        Returns:
            (N, 3, resolution, resolution) float, roughly in [-1, 1] for trained generators.
        """
        if wplus.ndim == 2:
            wplus = wplus[:, None].expand(-1, self.n_latent, -1)
        check_shape("synthesis: wplus", wplus, (None, self.n_latent, self.style_dim))
        noises = self._resolve_noise(noise, wplus.shape[0])
        x = self.input(wplus.shape[0])
        if self.channels_last or (self.channels_last is None and x.device.type == "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, wplus[:, 0], noises[0])
        skip = self.to_rgb1(x, wplus[:, 1])
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * k](x, wplus[:, i], noises[1 + 2 * k])
            x = self.convs[2 * k + 1](x, wplus[:, i + 1], noises[2 + 2 * k])
            skip = to_rgb(x, wplus[:, i + 2], skip)
            i += 2
        return skip

    def forward(self, wplus: torch.Tensor, noise: NoiseSpec = None) -> torch.Tensor:
        """Same as :meth:`synthesis`."""
        return self.synthesis(wplus, noise)

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, truncation: float = 1.0, noise: NoiseSpec = None) -> torch.Tensor:
        """n random images (N, 3, H, W) from z ~ N(0, I) drawn with ``seed``, optionally truncated."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.style_dim, generator=g).to(self.device)
        w = self.mapping(z)
        if truncation < 1:
            avg = self.latent_avg if self.latent_avg is not None else self.mean_latent(4096)
            w = avg.to(w) + truncation * (w - avg.to(w))
        return self.synthesis(w, noise)

    # -- state --------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):  # keep latent_avg on the module's device/dtype
        out = super()._apply(fn, *args, **kwargs)
        if self.latent_avg is not None:
            self.latent_avg = fn(self.latent_avg)
        return out
