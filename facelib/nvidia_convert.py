"""Converting a generator file to a rosinality-layout ``.pt``, checked against the source network.

:class:`RecordedGenerator` evaluates a stylegan2-ada-pytorch generator record (read as data by
:mod:`facelib.nvidia`) with NVIDIA's own conventions, independently of the name table;
:func:`convert_checkpoint` writes a converted file only when the file, reloaded through
:func:`facelib.weights.load_generator`, reproduces the source images.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import weights  # weights.load_generator is looked up at call time, so a replaced loader is used
from ._io import atomic_path
from .errors import CheckpointError, InputError
from .nvidia import (PersistentRecord, inspect_generator, is_nvidia_pickle, nvidia_to_rosinality, read_nvidia_pickle,
                     select_generator)
from .stylegan2 import SQRT2

__all__ = ["RecordedGenerator", "ConversionResult", "convert_checkpoint"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# NVIDIA-convention evaluation of a record (the conversion's independent check)
# ----------------------------------------------------------------------------------------

def _upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int, pad: tuple[int, int], gain: float) -> torch.Tensor:
    """Zero-insert by ``up``, zero-pad (p0, p1) on both axes, true 2-D convolution with ``f * gain``."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


class RecordedGenerator:
    """Evaluates a stylegan2-ada-pytorch ``Generator`` record with NVIDIA's own conventions.

    The weights are used under their NVIDIA names with NVIDIA's gains (weight_gain/bias_gain
    on fully connected layers, ToRGB's gain on the styles, demodulation of the unscaled
    weight, FIR filters from the recorded ``resample_filter`` buffers, clamping after the
    activation). It exists to check conversions against the source network; it is slow
    (non-fused, float32) and not meant for editing work.
    """

    def __init__(self, G: PersistentRecord, *, source: "str | os.PathLike[str] | None" = None) -> None:
        self.spec = inspect_generator(G, source)
        self.G = G
        self.num_ws = self.spec.num_ws
        self.resolution = self.spec.resolution

    @staticmethod
    def _fc(layer: PersistentRecord, x: torch.Tensor) -> torch.Tensor:
        w = layer.parameters["weight"].float() * float(layer.attrs.get("weight_gain", 1.0))
        x = x.matmul(w.t())
        b = layer.parameters.get("bias")
        if b is not None:
            x = x + b.float() * float(layer.attrs.get("bias_gain", 1.0))
        if layer.attrs.get("activation", "linear") == "lrelu":
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim), like NVIDIA's ``G.mapping(z, None, truncation_psi)``."""
        m = self.G.child("mapping")
        x = z.float() * torch.rsqrt(z.float().square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.spec.n_mlp):
            x = self._fc(m.modules[f"fc{i}"], x)
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            ws = m.buffers["w_avg"].float().lerp(ws, truncation_psi)
        return ws

    def _layer(self, layer: PersistentRecord, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        styles = self._fc(layer.modules["affine"], w)  # [N, I]
        weight = layer.parameters["weight"].float()  # [O, I, k, k]
        up = int(layer.attrs.get("up", 1))
        dcoefs = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
        x = x * styles[:, :, None, None]
        if up == 1:
            x = F.conv2d(x, weight, padding=int(layer.attrs.get("padding", 1)))
        else:  # transposed conv, then the FIR filter with the padding NVIDIA's conv2d_resample derives
            f = layer.buffers["resample_filter"].float()
            k, fw, p = weight.shape[-1], f.shape[-1], int(layer.attrs.get("padding", 1))
            p0 = p + (fw + up - 1) // 2 - (k - 1)
            p1 = p + (fw - up) // 2 - (k - up)
            pt = max(min(-p0, -p1), 0)
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up, padding=pt)
            x = _upfirdn2d(x, f, up=1, pad=(p0 + pt, p1 + pt), gain=up ** 2)
        x = x * dcoefs[:, :, None, None]
        if noise_mode == "const":
            x = x + layer.buffers["noise_const"].float() * layer.parameters["noise_strength"].float()
        x = F.leaky_relu(x + layer.parameters["bias"].float()[None, :, None, None], 0.2) * SQRT2
        if self.spec.conv_clamp is not None:
            x = x.clamp(-self.spec.conv_clamp, self.spec.conv_clamp)
        return x

    def _torgb(self, layer: PersistentRecord, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self._fc(layer.modules["affine"], w) * float(layer.attrs.get("weight_gain", 1.0))
        x = F.conv2d(x * styles[:, :, None, None], layer.parameters["weight"].float())
        x = x + layer.parameters["bias"].float()[None, :, None, None]
        if self.spec.conv_clamp is not None:
            x = x.clamp(-self.spec.conv_clamp, self.spec.conv_clamp)
        return x

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, 3, H, W), like NVIDIA's ``G.synthesis(ws, noise_mode=...)``.

        Args:
            ws: (N, num_ws, w_dim) float.
            noise_mode: "const" (the stored noise maps x strength) or "none".
        """
        if noise_mode not in ("const", "none"):
            raise InputError(f"noise_mode must be 'const' or 'none', got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise InputError(f"ws: expected (N, {self.num_ws}, w_dim), got {tuple(ws.shape)}")
        syn = self.G.child("synthesis")
        ws = ws.float()
        x = img = None
        idx = 0
        for k in range(2, int(math.log2(self.resolution)) + 1):
            blk = syn.modules[f"b{2 ** k}"]
            if k == 2:
                const = blk.parameters["const"].float()
                x = self._layer(blk.modules["conv1"], const[None].repeat(ws.shape[0], 1, 1, 1), ws[:, idx], noise_mode)
                w_rgb = ws[:, idx + 1]
                idx += 1
            else:
                x = self._layer(blk.modules["conv0"], x, ws[:, idx], noise_mode)
                x = self._layer(blk.modules["conv1"], x, ws[:, idx + 1], noise_mode)
                w_rgb = ws[:, idx + 2]
                idx += 2
            if img is not None:
                img = _upfirdn2d(img, blk.buffers["resample_filter"].float(), up=2, pad=(2, 1), gain=4)
            y = self._torgb(blk.modules["torgb"], x, w_rgb)
            img = y if img is None else img + y
        return img


# ----------------------------------------------------------------------------------------
# File conversion
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConversionResult:
    """Outcome of :func:`convert_checkpoint`.

    Attributes:
        src, dst: the files.
        source_format: "nvidia-pickle" or "torch".
        resolution, n_latent: of the generator.
        n_images: images compared before writing.
        max_abs_err: max |source - converted| over those images (noise=None / noise_mode='const').
        mapping_err: max |w_source - w_converted| over the z used to build the W+ codes.
        conv_clamp: the clamp carried over (None when the source has none).
    """

    src: str
    dst: str
    source_format: str
    resolution: int
    n_latent: int
    n_images: int
    max_abs_err: float
    mapping_err: float
    conv_clamp: float | None


def convert_checkpoint(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", *, n_check: int = 3,
                       seed: int = 0, tolerance: float = 1e-3) -> ConversionResult:
    """Convert a generator file to a rosinality-layout ``.pt`` ``{"g_ema", "latent_avg"}``, verified first.

    Sources: an NVIDIA stylegan2-ada-pytorch network pickle (read as data) or any checkpoint
    :func:`facelib.load_generator` reads. Before ``dst`` is written (atomically), ``n_check``
    images are generated from fixed W+ codes (every row the mapping of its own z, drawn with
    ``seed``) with the stored noise, by the source network and by the written file reloaded
    with ``load_generator``; their max abs difference must be below ``tolerance``. For a
    pickle the source images come from :class:`RecordedGenerator` (NVIDIA's conventions on
    the NVIDIA-named weights), so the check is independent of the name table. A
    ``conv_clamp`` is kept under the checkpoint's ``"facelib"`` entry.

    Returns:
        A :class:`ConversionResult` with the measured differences.
    Raises:
        CheckpointError: unreadable source, or a converted file that does not reproduce it (nothing written).
        InputError: ``n_check < 1`` or a ``.pkl`` destination (only ``.pt`` files are written).
    """
    src, dst = Path(src), Path(dst)
    if n_check < 1:
        raise InputError(f"n_check must be >= 1, got {n_check}")
    if dst.suffix.lower() == ".pkl":
        raise InputError(f"{dst}: facelib writes rosinality-layout torch files; give the output a .pt name")
    ckpt: dict[str, Any]
    if is_nvidia_pickle(src):
        source_format = "nvidia-pickle"
        G_rec = select_generator(read_nvidia_pickle(src), source=src)
        ckpt = nvidia_to_rosinality(G_rec, source=src)
        reference = RecordedGenerator(G_rec, source=src)
        style_dim, n_latent = reference.spec.w_dim, reference.num_ws
        conv_clamp = reference.spec.conv_clamp

        def src_mapping(z: torch.Tensor) -> torch.Tensor:
            return reference.mapping(z)[:, 0]

        def src_synthesis(wplus: torch.Tensor) -> torch.Tensor:
            return reference.synthesis(wplus, noise_mode="const")
    else:
        source_format = "torch"
        G_src = weights.load_generator(src)
        ckpt = weights.generator_checkpoint(G_src)
        style_dim, n_latent, conv_clamp = G_src.style_dim, G_src.n_latent, G_src.conv_clamp
        src_mapping, src_synthesis = G_src.mapping, G_src.synthesis
    if conv_clamp is None:
        ckpt.pop("facelib", None)  # everything else is inferred from the keys
    else:
        ckpt["facelib"] = {"conv_clamp": float(conv_clamp)}

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_check * n_latent, style_dim, generator=g)
    with torch.no_grad():
        w_src = torch.cat([src_mapping(zc) for zc in z.split(n_latent)])
        wplus = w_src.reshape(n_check, n_latent, style_dim)
        imgs_src = [src_synthesis(wplus[i:i + 1]) for i in range(n_check)]
    if not (bool(torch.isfinite(w_src).all()) and all(bool(torch.isfinite(im).all()) for im in imgs_src)):
        raise CheckpointError(src, "the source network produces NaN/inf values (damaged weights?); nothing was written")
    with atomic_path(dst) as tmp:
        torch.save(ckpt, tmp)
        try:
            G_new = weights.load_generator(tmp)
        except CheckpointError as e:  # name the source, not the temporary file
            raise CheckpointError(src, e.problem) from None
        with torch.no_grad():
            w_new = torch.cat([G_new.mapping(zc) for zc in z.split(n_latent)])

            def diff(a: torch.Tensor, b: torch.Tensor) -> float:  # NaN anywhere makes it NaN (max() would drop it)
                d = (a - b).abs()
                return math.nan if not bool(torch.isfinite(d).all()) else float(d.max())

            mapping_err = diff(w_new, w_src)
            errs = [diff(G_new.synthesis(wplus[i:i + 1], noise=None), imgs_src[i]) for i in range(n_check)]
            err = math.nan if any(math.isnan(e) for e in errs) else max(errs)
        lat_err = 0.0
        if "latent_avg" in ckpt:
            if G_new.latent_avg is None:
                lat_err = math.inf
            else:
                lat_err = float((G_new.latent_avg - ckpt["latent_avg"]).abs().max())
        worst = math.nan if any(math.isnan(v) for v in (err, mapping_err, lat_err)) else max(err, mapping_err, lat_err)
        if not worst < tolerance:  # also catches NaN
            raise CheckpointError(dst, f"the converted generator does not reproduce {src}: max abs difference "
                                       f"images {err:.3g}, mapping {mapping_err:.3g}, latent_avg {lat_err:.3g} "
                                       f"(tolerance {tolerance:g}); nothing was written")
        log.debug("%s -> %s: %d images from fixed W+ match (max abs %.3g)", src, dst, n_check, err)
    return ConversionResult(src=str(src), dst=str(dst), source_format=source_format,
                            resolution=G_new.resolution, n_latent=G_new.n_latent, n_images=n_check,
                            max_abs_err=err, mapping_err=mapping_err, conv_clamp=conv_clamp)
