"""pSp and e4e face encoders: an aligned photo to a W+ latent in one forward pass.

:func:`load_encoder` reads the StyleGAN2 face-encoder checkpoints people download,
``psp_ffhq_encode.pt`` (pixel2style2pixel, ``GradualStyleEncoder``) and ``e4e_ffhq_encode.pt``
(encoder4editing, ``Encoder4Editing``), without executing pickled code. Both files are
``{"state_dict": encoder.* + decoder.*, "opts": {...}, "latent_avg": (18, 512)}``; the two
encoders share every key and shape, so which one a file holds is read from
``opts["encoder_type"]``, and every size from the keys and shapes (never from the file name).

The network (:class:`StyleEncoder`):

* backbone: the IR-SE units of ArcFace IR-SE50 (:func:`facelib.identity.ir_stem`,
  :func:`facelib.identity.ir_body`), BatchNorm with running statistics; three taps at the ends
  of stages 2, 3 and 4: c1 (N, 2C, S/4, S/4), c2 (N, 4C, S/8, S/8), c3 (N, 8C, S/16, S/16);
* feature pyramid: p2 = bilinear(c3 -> S/8, align_corners=True) + latlayer1(c2), and
  p1 = bilinear(p2 -> S/4) + latlayer2(c1);
* one map2style head per W+ row: stride-2 3x3 convs, each followed by LeakyReLU(0.01), down to
  1x1, then an EqualLinear (weight / sqrt(fan_in)). A head's conv count says which map it reads
  (c3, p2 or p1: rows 0-2, 3-6 and 7-17 in the released files);
* pSp: row i = head_i; e4e: row i = head_0 + head_i for i >= 1 (every row at inference);
* W+ = those codes + the stored ``latent_avg`` (one row per W+ row, as saved).

The checkpoint's ``decoder.*`` is loaded by :func:`facelib.weights.load_generator` and exposed
as ``encoder.decoder``. Inputs are (N, 3, 256, 256) in [-1, 1] (the heads' depths assume 256 px;
at another size the reference code silently mixes rows), so ``encoder(x)`` refuses other
sizes and :meth:`StyleEncoder.encode` resizes images (paths, PIL, tensors) to 256 first, as
pSp's own ``Resize((256, 256))`` transform does, with a logged note.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, InputError, ShapeError, check_shape
from .identity import ir_body, ir_stem
from .projection import load_targets
from .weights import file_sha256, load_generator, resolve_device, safe_torch_load, state_fingerprint

__all__ = ["ENCODER_TYPES", "EncoderSpec", "StyleEncoder", "load_encoder", "infer_encoder_spec",
           "encoder_state_dict", "describe_encoder_checkpoint"]

log = logging.getLogger(__name__)

#: ``opts["encoder_type"]`` -> facelib's name for the encoder. pSp's other types
#: (``BackboneEncoderUsingLastLayerIntoW(Plus)``) have other keys and are not supported.
ENCODER_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}
_UNSUPPORTED = ("BackboneEncoderUsingLastLayerIntoW", "BackboneEncoderUsingLastLayerIntoWPlus")


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncoderSpec:
    """Everything that fixes a :class:`StyleEncoder`'s layout.

    Attributes:
        kind: "psp" (GradualStyleEncoder) or "e4e" (Encoder4Editing).
        layers: IR-SE units per backbone stage ((3, 4, 14, 3) in the released files).
        base_channels: stage-1 width (64); stages are (1, 2, 4, 8) times this.
        se_reduction: squeeze-excitation reduction (16).
        head_depths: stride-2 convs per map2style head, one head per W+ row
            ((4,) * 3 + (5,) * 4 + (6,) * 11 in the released files).
        style_dim: W+ row width (512 = 8 * base_channels).
        start_from_latent_avg: whether ``latent_avg`` is added to the codes (True in both FFHQ files).
    """

    kind: str
    layers: tuple[int, int, int, int] = (3, 4, 14, 3)
    base_channels: int = 64
    se_reduction: int = 16
    head_depths: tuple[int, ...] = (4,) * 3 + (5,) * 4 + (6,) * 11
    style_dim: int = 512
    start_from_latent_avg: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_TYPES.values():
            raise InputError(f"EncoderSpec.kind: expected 'psp' or 'e4e', got {self.kind!r}")
        d = self.head_depths
        if not d or any(b < a for a, b in zip(d, d[1:])) or d[-1] - d[0] > 2 or d[0] < 1:
            raise InputError(f"EncoderSpec.head_depths: expected non-decreasing depths spanning at most 3 levels, "
                             f"got {d}")
        if self.style_dim != 8 * self.base_channels:
            raise InputError(f"EncoderSpec: style_dim {self.style_dim} must be 8 * base_channels "
                             f"({8 * self.base_channels})")

    @property
    def n_styles(self) -> int:
        """Number of W+ rows (18 for a 1024 px generator)."""
        return len(self.head_depths)

    @property
    def input_size(self) -> int:
        """Input side: the first heads reduce the S/16 map c3 to 1x1 (256 in the released files)."""
        return 16 * 2 ** self.head_depths[0]


class EqualLinear(nn.Module):
    """StyleGAN's equalised linear layer with lr_mul 1: ``x @ (weight / sqrt(in))^T + bias``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class StyleHead(nn.Module):
    """pSp's map2style block: ``depth`` x (3x3 conv stride 2 + LeakyReLU(0.01)) to 1x1, then EqualLinear.

    Maps (N, dim, 2**depth, 2**depth) to (N, dim). Keys ``convs.{0,2,..}.weight/bias``,
    ``linear.weight/bias``.
    """

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]  # slope 0.01
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))  # [N, D]


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class StyleEncoder(nn.Module):
    """pSp / e4e encoder: (N, 3, S, S) aligned faces in [-1, 1] -> W+ (N, n_styles, style_dim).

    Built from an :class:`EncoderSpec`; :func:`load_encoder` fills it from a checkpoint. Its
    ``state_dict()`` keys are the checkpoint's ``encoder.*`` keys without the prefix.

    Attributes:
        spec: the layout.
        latent_avg: (n_styles, style_dim) buffer added to the codes (zeros when the spec says not to).
        decoder: the checkpoint's StyleGAN2 generator, or None.
        weights_sha256, source_path: the file it came from (None for an in-memory state).
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        c = spec.base_channels
        self.input_layer = ir_stem(c)
        self.body = ir_body(spec.layers, base_channels=c, se_reduction=spec.se_reduction)
        self.styles = nn.ModuleList(StyleHead(spec.style_dim, d) for d in spec.head_depths)
        self.latlayer1 = nn.Conv2d(4 * c, spec.style_dim, kernel_size=1)
        self.latlayer2 = nn.Conv2d(2 * c, spec.style_dim, kernel_size=1)
        self.register_buffer("latent_avg", torch.zeros(spec.n_styles, spec.style_dim), persistent=False)
        ends = [sum(spec.layers[:k + 1]) - 1 for k in range(4)]
        self._taps = (ends[1], ends[2], ends[3])  # c1, c2, c3: body indices 6, 20, 23 for IR-SE50
        self.decoder: nn.Module | None = None
        self.weights_sha256: str | None = None
        self.source_path: str | None = None
        self.eval()

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def n_styles(self) -> int:
        return self.spec.n_styles

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's own output, before ``latent_avg`` is added.

        Args:
            images: (N, 3, S, S) float in [-1, 1], S = ``input_size``.
        Returns:
            (N, n_styles, style_dim).
        Raises:
            ShapeError: another shape (use :meth:`encode` to resize).
        """
        s = self.spec.input_size
        try:
            check_shape("images", images, (None, 3, s, s))
        except ShapeError as e:
            raise ShapeError(f"{e}; the {self.spec.kind} encoder takes {s}x{s} aligned faces "
                             "(StyleEncoder.encode resizes them as pSp's inference does)",
                             actual_shape=e.actual_shape, expected_shape=e.expected_shape) from None
        x = self.input_layer(images)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                taps.append(x)
        c1, c2, c3 = taps                                   # [N, 2C, S/4], [N, 4C, S/8], [N, 8C, S/16]
        p2 = _upsample_add(c3, self.latlayer1(c2))          # [N, D, S/8, S/8]
        p1 = _upsample_add(p2, self.latlayer2(c1))          # [N, D, S/4, S/4]
        levels = (c3, p2, p1)
        d0 = self.spec.head_depths[0]
        outs = [head(levels[d - d0]) for head, d in zip(self.styles, self.spec.head_depths)]  # each [N, D]
        if self.spec.kind == "psp":
            return torch.stack(outs, dim=1)
        w0 = outs[0]                                        # e4e: base code in every row, plus deltas
        deltas = torch.stack([torch.zeros_like(w0)] + outs[1:], dim=1)
        return w0[:, None] + deltas

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """W+ latents: the codes plus ``latent_avg`` (what pSp/e4e feed their generator).

        Args:
            images: (N, 3, S, S) float in [-1, 1], FFHQ-aligned, S = ``input_size`` (256).
        Returns:
            (N, n_styles, style_dim) W+ latents.
        Raises:
            ShapeError: another shape.
        """
        codes = self.codes(images)
        if self.spec.start_from_latent_avg:
            codes = codes + self.latent_avg.to(codes)[None]
        return codes

    @torch.no_grad()
    def encode(self, images: Any, *, batch_size: int = 8) -> torch.Tensor:
        """W+ of aligned photos of any size: paths, PIL images or tensors in [-1, 1].

        Images whose side is not ``input_size`` are resized to it (LANCZOS for files and PIL
        images, antialiased bilinear for tensors), as pSp's ``Resize((256, 256))`` does; a log
        line says so.

        Args:
            images: what :func:`facelib.projection.load_targets` accepts ((N, 3, H, W) in [-1, 1],
                a path, a PIL image, or a list of them).
            batch_size: images per forward pass.
        Returns:
            (N, n_styles, style_dim) float32 W+ on the CPU.
        """
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, got {batch_size}")
        s = self.spec.input_size
        if torch.is_tensor(images) and images.ndim >= 3 and tuple(images.shape[-2:]) != (s, s):
            log.info("encoder: resizing %s images to %d px (the encoder's input size)",
                     "x".join(map(str, images.shape[-2:])), s)
        x, _ = load_targets(images, s)                      # [N, 3, s, s] in [-1, 1]
        device = next(self.parameters()).device
        out = [self(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    def extra_repr(self) -> str:
        sp = self.spec
        return (f"kind={sp.kind}, input={sp.input_size}px, layers={sp.layers}, base_channels={sp.base_channels}, "
                f"n_styles={sp.n_styles}, style_dim={sp.style_dim}")


# ----------------------------------------------------------------------------------------
# Reading checkpoints
# ----------------------------------------------------------------------------------------

def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(sd)
    while out and all(isinstance(k, str) and k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.fullmatch(k))})


def _opts_dict(opts: Any) -> dict[str, Any]:
    if isinstance(opts, argparse.Namespace):
        return vars(opts)
    return dict(opts) if isinstance(opts, Mapping) else {}


def infer_encoder_spec(state: Mapping[str, Any], opts: Any, *,
                       source: "str | os.PathLike[str] | None" = None) -> EncoderSpec:
    """The layout of an encoder state dict (keys without ``encoder.``) and its ``opts``.

    Works on real tensors and on anything with a ``.shape`` (shape-only stand-ins).

    Raises:
        CheckpointError: keys that do not form a pSp/e4e encoder, or ``opts`` without a
            supported ``encoder_type``.
    """
    o = _opts_dict(opts)
    etype = o.get("encoder_type")
    if etype in _UNSUPPORTED:
        raise CheckpointError(source, f"encoder_type {etype!r} is not supported (only GradualStyleEncoder = pSp "
                                      "and Encoder4Editing = e4e)")
    if etype not in ENCODER_TYPES:
        raise CheckpointError(source, "cannot tell pSp from e4e: opts['encoder_type'] is "
                                      f"{etype!r}, expected 'GradualStyleEncoder' or 'Encoder4Editing' (the keys "
                                      "of the two are identical)")

    def shape(key: str) -> tuple[int, ...]:
        t = state.get(key)
        if t is None or not hasattr(t, "shape"):
            raise CheckpointError(source, f"encoder weights lack {key!r}")
        return tuple(int(s) for s in t.shape)

    base = shape("input_layer.0.weight")[0]
    units = _indices(state, r"body\.(\d+)\.res_layer\.1\.weight")
    if not units or units != list(range(len(units))):
        raise CheckpointError(source, "encoder body units body.N.res_layer are missing or not numbered 0..n-1")
    widths = [shape(f"body.{i}.res_layer.1.weight")[0] for i in units]
    layers: list[int] = []
    for i, w in enumerate(widths):
        if i == 0 or w != widths[i - 1]:
            layers.append(0)
        layers[-1] += 1
    if len(layers) != 4 or [widths[0], max(widths)] != [base, 8 * base]:
        raise CheckpointError(source, f"encoder body has stage widths {sorted(set(widths))}, expected four stages "
                                      f"of {base}, {2 * base}, {4 * base}, {8 * base} channels")
    last = units[-1]
    fc1 = f"body.{last}.res_layer.5.fc1.weight"
    if fc1 not in state:
        raise CheckpointError(source, "encoder body has no squeeze-excitation gates (res_layer.5): an IR backbone "
                                      "without SE is not a pSp/e4e FFHQ encoder")
    reduction = max(1, widths[-1] // max(1, shape(fc1)[0]))
    heads = _indices(state, r"styles\.(\d+)\.linear\.weight")
    if not heads or heads != list(range(len(heads))):
        raise CheckpointError(source, "encoder has no map2style heads styles.N.linear numbered 0..n-1")
    depths = tuple(len(_indices(state, rf"styles\.{i}\.convs\.(\d+)\.weight")) for i in heads)
    dim = shape("styles.0.linear.weight")[0]
    start = bool(o.get("start_from_latent_avg", True))
    try:
        return EncoderSpec(kind=ENCODER_TYPES[etype], layers=tuple(layers), base_channels=base,
                           se_reduction=reduction, head_depths=depths, style_dim=dim, start_from_latent_avg=start)
    except InputError as e:
        raise CheckpointError(source, f"unknown encoder layout: {e}") from None


def _foreign(ckpt: Any) -> str:
    """What a checkpoint that is not an encoder looks like, for the error message."""
    if not isinstance(ckpt, Mapping):
        return f"a {type(ckpt).__name__}, not a checkpoint dict"
    keys = [str(k) for k in list(ckpt)[:6]]
    if "g_ema" in ckpt or "g" in ckpt:
        return "a StyleGAN2 generator checkpoint (load it with facelib.load_generator)"
    flat = _strip_module(ckpt) if all(isinstance(k, str) for k in ckpt) else {}
    if any(k.startswith(("input_layer.", "conv1.", "layer1.")) for k in flat):
        return "an ArcFace identity network (load it with facelib.load_arcface)"
    if any(k.startswith(("style.", "convs.", "to_rgbs.")) for k in flat):
        return "a bare StyleGAN2 generator state dict (load it with facelib.load_generator)"
    return f"a dict with keys {keys}{' ...' if len(ckpt) > 6 else ''}"


def encoder_state_dict(ckpt: Any, *, source: "str | os.PathLike[str] | None" = None
                       ) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Split a loaded pSp/e4e checkpoint into (encoder state without ``encoder.``, opts, latent_avg).

    ``module.`` prefixes (DataParallel re-saves) are removed; unknown top-level keys are ignored.

    Raises:
        CheckpointError: not a pSp/e4e checkpoint.
    """
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(source, f"not a pSp/e4e encoder checkpoint: found {_foreign(ckpt)}; expected "
                                      "{'state_dict': encoder.* + decoder.*, 'opts': ..., 'latent_avg': ...}")
    sd = _strip_module(ckpt["state_dict"])
    enc = {k[len("encoder."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("encoder.")}
    if not enc:
        raise CheckpointError(source, "not a pSp/e4e encoder checkpoint: its state_dict has no encoder.* weights "
                                      f"(found {_foreign(sd)})")
    return enc, _opts_dict(ckpt.get("opts")), ckpt.get("latent_avg")


def _has_decoder(ckpt: Mapping[str, Any]) -> bool:
    return any(isinstance(k, str) and k.startswith("decoder.") for k in _strip_module(ckpt["state_dict"]))


def describe_encoder_checkpoint(ckpt: Any) -> tuple[str, str] | None:
    """(format, description) of a pSp/e4e checkpoint (also from shape-only stand-ins), or None.

    The format is "psp-encoder" or "e4e-encoder"; None when the object is not one.
    """
    try:
        enc, opts, _ = encoder_state_dict(ckpt)
        spec = infer_encoder_spec(enc, opts)
    except (CheckpointError, InputError, TypeError, ValueError, AttributeError):
        return None
    has_decoder = _has_decoder(ckpt)
    name = {"psp": "pSp GradualStyleEncoder", "e4e": "e4e Encoder4Editing"}[spec.kind]
    return (f"{spec.kind}-encoder",
            f"{name}: {spec.input_size} px faces -> W+ ({spec.n_styles} x {spec.style_dim})"
            + (" + its StyleGAN2 decoder" if has_decoder else ", no decoder"))


def _check_keys(net: StyleEncoder, state: Mapping[str, Any], source: Any) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{len(items)} {label} ({'; '.join(items[:3])}{'; ...' if len(items) > 3 else ''})"
             for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", wrong))
             if items]
    if parts:
        raise CheckpointError(source, f"looks like a {net.spec.kind} encoder but does not match its layout: "
                                      + ", ".join(parts))


def load_encoder(path_or_checkpoint: "str | os.PathLike[str] | Mapping[str, Any]", *,
                 device: "str | torch.device | None" = None, decoder: bool = True) -> StyleEncoder:
    """Load a pSp (``psp_ffhq_encode.pt``) or e4e (``e4e_ffhq_encode.pt``) encoder checkpoint.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code runs). The encoder
    kind comes from ``opts["encoder_type"]``, every size from the keys and shapes; a
    ``module.``-prefixed re-save is accepted, unknown top-level keys are ignored.

    Args:
        path_or_checkpoint: the file, or an already loaded checkpoint dict.
        device: None (CPU), "auto", or a torch device.
        decoder: also load the checkpoint's ``decoder.*`` as a facelib generator (``.decoder``).
    Returns:
        A :class:`StyleEncoder` in eval mode with frozen parameters: ``enc(x)`` maps
        (N, 3, 256, 256) in [-1, 1] to W+ (N, 18, 512) including ``latent_avg``;
        ``enc.encode(images)`` accepts any size and paths; ``enc.decoder`` is the
        :class:`~facelib.stylegan2.StyleGAN2Generator` (None without decoder weights).
    Raises:
        CheckpointError: missing/corrupt/unsafe files, files of another kind (generators,
            ArcFace networks, anything else), unknown layouts or a wrong ``latent_avg``.
    """
    source = None if isinstance(path_or_checkpoint, Mapping) else Path(path_or_checkpoint)
    ckpt = path_or_checkpoint if source is None else safe_torch_load(source)
    enc_sd, opts, latent_avg = encoder_state_dict(ckpt, source=source)
    spec = infer_encoder_spec(enc_sd, opts, source=source)
    with torch.device("meta"):  # no random init of ~267 M values: the file's tensors are assigned below
        net = StyleEncoder(spec)
    _check_keys(net, enc_sd, source)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in enc_sd.items()}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(state, strict=True, assign=True)
    if spec.start_from_latent_avg:
        if not torch.is_tensor(latent_avg):
            raise CheckpointError(source, "opts say start_from_latent_avg but the checkpoint has no latent_avg")
        avg = latent_avg.detach().float()
        if avg.shape == (spec.style_dim,):
            avg = avg[None].expand(spec.n_styles, -1)
        if tuple(avg.shape) != (spec.n_styles, spec.style_dim):
            raise CheckpointError(source, f"latent_avg has shape {tuple(latent_avg.shape)}, expected "
                                          f"({spec.n_styles}, {spec.style_dim}) or ({spec.style_dim},)")
        net.latent_avg = avg.clone()
    else:
        net.latent_avg = torch.zeros(spec.n_styles, spec.style_dim)
    sha = file_sha256(source) if source is not None else state_fingerprint(enc_sd)
    net.weights_sha256, net.source_path = sha, (str(source) if source is not None else None)
    if decoder and _has_decoder(ckpt):
        try:
            G = load_generator(ckpt)  # its decoder.* part (facelib.weights reads pSp/e4e checkpoints)
        except CheckpointError as e:
            raise CheckpointError(source, f"decoder: {e.problem}") from None
        if G.n_latent != spec.n_styles or G.style_dim != spec.style_dim:
            raise CheckpointError(source, f"the decoder has W+ ({G.n_latent}, {G.style_dim}) but the encoder makes "
                                          f"({spec.n_styles}, {spec.style_dim})")
        G.weights_sha256, G.source_path = sha, net.source_path  # load_generator(path) reads the same decoder
        net.decoder = G
    elif decoder:
        log.warning("%s: no decoder.* weights in the checkpoint; encoder.decoder is None", source or "checkpoint")
    del ckpt, enc_sd, state
    net.eval().requires_grad_(False)
    log.info("%s: loaded %s encoder (%d W+ rows, %d px input)", source or "<checkpoint>", spec.kind,
             spec.n_styles, spec.input_size)
    return net.to(resolve_device(device))
