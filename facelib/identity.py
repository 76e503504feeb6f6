"""Face identity: ArcFace embedding networks and the identity crop.

Sections:

1. Identity networks: the insightface ``arcface_torch`` IResNet family and the
   pSp/TreB1eN IR / IR-SE ``Backbone`` family, with state-dict key names identical to the
   released checkpoints. Every network maps (N, 3, 112, 112) in [-1, 1] to (N, 512)
   L2-normalised embeddings.
2. Loading: :func:`detect_arcface_arch` (architecture from keys and shapes) and
   :func:`load_arcface` (strict load of ``backbone.pth`` / ``model_ir_se50.pth`` style files).
3. Identity crop: :func:`identity_crop`, FFHQ-aligned image -> 112x112 inner-face crop.

The independent judge (dlib descriptors, landmarks, pose) lives in :mod:`facelib.dlib_judge`.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, InputError, ShapeError, check_shape
from .weights import check_finite_tensors, safe_torch_load

__all__ = [
    # identity networks
    "ArcFaceSpec",
    "IResNet",
    "IRBackbone",
    "ir_stem",
    "ir_body",
    "ARCFACE_ARCHS",
    "build_arcface",
    # loading
    "detect_arcface_arch",
    "load_arcface",
    # identity crop
    "ID_SIZE",
    "identity_crop",
]

logger = logging.getLogger(__name__)

ID_SIZE = 112  # side of the identity networks' input (both families)


# =============================================================================================
# 1. Identity networks
# =============================================================================================

# Block counts per stage. insightface arcface_torch backbones/iresnet.py (iresnet18..100) and
# iresnet200; pSp models/encoders/helpers.py get_blocks (50, 100, 152), shared by IR and IR-SE.
_IRESNET_LAYERS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
_IR_LAYERS = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
_FAMILIES = ("iresnet", "ir", "ir_se")

#: Standard architecture name -> (family, block counts per stage).
ARCFACE_ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    **{f"iresnet{d}": ("iresnet", n) for d, n in _IRESNET_LAYERS.items()},
    **{f"ir{d}": ("ir", n) for d, n in _IR_LAYERS.items()},
    **{f"ir_se{d}": ("ir_se", n) for d, n in _IR_LAYERS.items()},
}

_CUSTOM_NAME = re.compile(r"^(iresnet|ir_se|ir)-(\d+)-(\d+)-(\d+)-(\d+)-c(\d+)(?:-e(\d+))?(?:-r(\d+))?$")


@dataclass(frozen=True)
class ArcFaceSpec:
    """Everything needed to build an identity network with the right state-dict layout.

    Attributes:
        family: "iresnet" (insightface arcface_torch), "ir" or "ir_se" (pSp/TreB1eN Backbone).
        layers: residual units per stage (4 stages; stride 2 at the first unit of each).
        base_channels: width of stage 1; stages are (1, 2, 4, 8) times this. 64 in every
            released checkpoint; smaller values give fast test-sized networks.
        embedding_dim: output size; 512 in every released checkpoint.
        se_reduction: squeeze-excitation reduction of "ir_se" units (16 in pSp).
        affine_output: whether the IR families' final BatchNorm1d has weight and bias
            (pSp's id loss builds it with ``affine=True``; TreB1eN's ``IR_SE_50`` factory without).
    """

    family: str
    layers: tuple[int, int, int, int]
    base_channels: int = 64
    embedding_dim: int = 512
    se_reduction: int = 16
    affine_output: bool = True

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise InputError(f"ArcFaceSpec.family: expected one of {_FAMILIES}, got {self.family!r}")
        if len(self.layers) != 4 or any(int(n) < 1 for n in self.layers):
            raise InputError(f"ArcFaceSpec.layers: expected 4 positive block counts, got {self.layers!r}")
        if self.base_channels < 1 or self.embedding_dim < 1 or self.se_reduction < 1:
            raise InputError(f"ArcFaceSpec: sizes must be positive, got {self}")
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))

    @property
    def name(self) -> str:
        """"iresnet50", "ir_se50", ... for released configurations, else e.g. "iresnet-1-1-1-1-c16"."""
        standard = (self.base_channels == 64 and self.embedding_dim == 512
                    and (self.family != "ir_se" or self.se_reduction == 16))
        if standard:
            for arch, (family, layers) in ARCFACE_ARCHS.items():
                if family == self.family and layers == self.layers:
                    return arch
        name = f"{self.family}-{'-'.join(map(str, self.layers))}-c{self.base_channels}"
        if self.embedding_dim != 512:
            name += f"-e{self.embedding_dim}"
        if self.family == "ir_se" and self.se_reduction != 16:
            name += f"-r{self.se_reduction}"
        return name

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Output channels of the four stages."""
        c = self.base_channels
        return (c, 2 * c, 4 * c, 8 * c)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class _IBasicBlock(nn.Module):
    """insightface residual unit: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = _conv3x3(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = _conv3x3(c_out, c_out, stride)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:  # 1x1 projection shortcut
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class _EmbeddingNet(nn.Module):
    """Shared interface: ``embed_raw`` is the checkpoint's own output, ``forward`` normalises it."""

    spec: ArcFaceSpec

    def embed_raw(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Identity embeddings.

        Args:
            images: (N, 3, 112, 112) float32 RGB in [-1, 1] (e.g. from :func:`identity_crop`).
        Returns:
            (N, embedding_dim) float32, each row L2-normalised.
        Raises:
            ShapeError: the input is not (N, 3, 112, 112).
        """
        check_shape("images", images, (None, 3, ID_SIZE, ID_SIZE))
        return F.normalize(self.embed_raw(images), dim=1)

    def extra_repr(self) -> str:
        return f"spec={self.spec.name}"


class IResNet(_EmbeddingNet):
    """insightface ``arcface_torch`` IResNet (keys ``conv1``, ``layer1.0.bn1``, ``fc``, ``features``).

    Args:
        layers: units per stage, e.g. (3, 4, 14, 3) for iresnet50.
        base_channels: stage-1 width (64 in released weights).
        embedding_dim: output size (512 in released weights).

    The stem keeps 112x112; each stage halves it, so the flattened map entering ``fc`` is
    8 * base_channels x 7 x 7. The module is created in eval mode.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 14, 3), *, base_channels: int = 64,
                 embedding_dim: int = 512) -> None:
        super().__init__()
        self.spec = ArcFaceSpec("iresnet", tuple(layers), base_channels, embedding_dim)
        widths = self.spec.widths
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        c_in = widths[0]
        for i, (n_units, c_out) in enumerate(zip(self.spec.layers, widths)):
            units = [_IBasicBlock(c_in, c_out, 2)] + [_IBasicBlock(c_out, c_out, 1) for _ in range(n_units - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            c_in = c_out
        self.bn2 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)  # insightface default dropout=0
        self.fc = nn.Linear(c_in * 7 * 7, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        self.eval()

    def embed_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) in [-1, 1] -> (N, embedding_dim), not normalised (insightface's output)."""
        x = self.prelu(self.bn1(self.conv1(images)))            # [N, C, 112, 112]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, 8C, 7, 7]
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class _SEGate(nn.Module):
    """Squeeze-excitation: global average -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class _IRUnit(nn.Module):
    """pSp/TreB1eN unit: res_layer = BN, conv3x3, PReLU, conv3x3(stride), BN[, SE]; plus shortcut.

    The shortcut is strided subsampling (``MaxPool2d(1, stride)``, no parameters) when the
    channel count is unchanged, else a strided 1x1 conv + BN.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, se_reduction: int | None) -> None:
        super().__init__()
        if c_in == c_out:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        res = [nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out), nn.PReLU(c_out),
               _conv3x3(c_out, c_out, stride), nn.BatchNorm2d(c_out)]
        if se_reduction is not None:
            res.append(_SEGate(c_out, se_reduction))
        self.res_layer = nn.Sequential(*res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_stem(channels: int) -> nn.Sequential:
    """The pSp/TreB1eN ``input_layer``: conv3x3 (3 -> channels, no bias), BatchNorm, PReLU.

    Maps (N, 3, H, W) to (N, channels, H, W); keys ``0.weight``, ``1.*``, ``2.weight``.
    """
    return nn.Sequential(_conv3x3(3, channels), nn.BatchNorm2d(channels), nn.PReLU(channels))


def ir_body(layers: Sequence[int], *, base_channels: int = 64, se_reduction: int | None = 16) -> nn.Sequential:
    """The pSp/TreB1eN ``body``: IR (``se_reduction=None``) or IR-SE units in four stages.

    Stage k has ``layers[k]`` units of width ``base_channels * (1, 2, 4, 8)[k]``; the first unit
    of each stage has stride 2 (so (N, C, H, W) -> (N, 8C, H/16, W/16)). Keys
    ``<unit>.res_layer.{0..4}[.5.fc1/fc2]`` and, where the width changes,
    ``<unit>.shortcut_layer.{0,1}``, as in the released IR-SE50 and pSp/e4e encoder files.
    """
    widths = [base_channels * m for m in (1, 2, 4, 8)]
    units: list[nn.Module] = []
    c_in = widths[0]
    for n_units, c_out in zip(layers, widths):
        for k in range(int(n_units)):
            units.append(_IRUnit(c_in, c_out, 2 if k == 0 else 1, se_reduction))
            c_in = c_out
    return nn.Sequential(*units)


class IRBackbone(_EmbeddingNet):
    """pSp/TreB1eN IR or IR-SE ``Backbone`` for 112x112 input (keys ``input_layer``, ``body.N``, ``output_layer``).

    Args:
        layers: units per stage, e.g. (3, 4, 14, 3) for IR-SE50.
        se: squeeze-excitation in every unit ("ir_se") or not ("ir").
        base_channels: stage-1 width (64 in released weights).
        embedding_dim: output size (512 in released weights).
        se_reduction: SE channel reduction (16 in pSp).
        affine_output: whether ``output_layer.4`` (BatchNorm1d) has weight/bias.

    The module is created in eval mode.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 14, 3), *, se: bool = True, base_channels: int = 64,
                 embedding_dim: int = 512, se_reduction: int = 16, affine_output: bool = True) -> None:
        super().__init__()
        self.spec = ArcFaceSpec("ir_se" if se else "ir", tuple(layers), base_channels, embedding_dim,
                                se_reduction, affine_output)
        widths = self.spec.widths
        # registration order (input, output, body) reproduces the released files' key order
        self.input_layer = ir_stem(widths[0])
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[3]),
            nn.Dropout(p=0.0),  # only active in training; facelib runs these networks in eval mode
            nn.Flatten(),
            nn.Linear(widths[3] * 7 * 7, embedding_dim),
            nn.BatchNorm1d(embedding_dim, affine=affine_output),
        )
        self.body = ir_body(self.spec.layers, base_channels=base_channels,
                            se_reduction=se_reduction if se else None)
        self.eval()

    def embed_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) in [-1, 1] -> (N, embedding_dim), the output layer before pSp's l2_norm."""
        return self.output_layer(self.body(self.input_layer(images)))


def _init_random(net: nn.Module, generator: torch.Generator) -> None:
    """Deterministic init that keeps activations O(1) through a deep residual stack in eval mode.

    Kaiming-normal convs, with the last conv of each residual branch scaled by 0.3 so the
    residual sum does not double per unit; SE convs with gain 1; linear N(0, 1/fan_in);
    BatchNorm at identity with unit running variance; PReLU slopes 0.25.
    """
    last_convs = set()
    for m in net.modules():
        if isinstance(m, _IBasicBlock):
            last_convs.add(id(m.conv2))
        elif isinstance(m, _IRUnit):
            last_convs.add(id(m.res_layer[3]))
    se_convs = {id(c) for m in net.modules() if isinstance(m, _SEGate) for c in (m.fc1, m.fc2)}
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                gain = 1.0 if (isinstance(m, nn.Linear) or id(m) in se_convs) else math.sqrt(2.0)
                if id(m) in last_convs:
                    gain *= 0.3
                m.weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.PReLU):
                m.weight.fill_(0.25)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.reset_running_stats()
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()


def _spec_from_arch(arch: str, layers: Sequence[int] | None, base_channels: int,
                    embedding_dim: int) -> ArcFaceSpec:
    if arch in ARCFACE_ARCHS:
        family, std_layers = ARCFACE_ARCHS[arch]
        if layers is not None and tuple(layers) != std_layers:
            raise InputError(f"build_arcface: arch {arch!r} has layers {std_layers}; pass the family name "
                             f"({family!r}) to choose other block counts, got layers={tuple(layers)}")
        return ArcFaceSpec(family, std_layers, base_channels, embedding_dim)
    if arch in _FAMILIES:
        if layers is None:
            raise InputError(f"build_arcface: family {arch!r} needs layers=(n1, n2, n3, n4)")
        return ArcFaceSpec(arch, tuple(layers), base_channels, embedding_dim)
    m = _CUSTOM_NAME.match(arch)
    if m:
        family = m.group(1)
        return ArcFaceSpec(family, tuple(int(m.group(i)) for i in range(2, 6)), int(m.group(6)),
                           int(m.group(7) or 512), int(m.group(8) or 16))
    raise InputError(f"build_arcface: unknown arch {arch!r}; expected one of {sorted(ARCFACE_ARCHS)}, "
                     f"a family name {_FAMILIES} with layers=..., or a name such as 'iresnet-1-1-1-1-c16'")


def _build_from_spec(spec: ArcFaceSpec) -> _EmbeddingNet:
    if spec.family == "iresnet":
        return IResNet(spec.layers, base_channels=spec.base_channels, embedding_dim=spec.embedding_dim)
    return IRBackbone(spec.layers, se=spec.family == "ir_se", base_channels=spec.base_channels,
                      embedding_dim=spec.embedding_dim, se_reduction=spec.se_reduction,
                      affine_output=spec.affine_output)


def build_arcface(arch: "str | ArcFaceSpec" = "iresnet50", *, layers: Sequence[int] | None = None,
                  base_channels: int = 64, embedding_dim: int = 512, seed: int | None = 0,
                  device: "torch.device | str | None" = None) -> nn.Module:
    """Build an identity network with deterministic random weights (for tests and smoke runs).

    Args:
        arch: a standard name (``ARCFACE_ARCHS``: "iresnet18/34/50/100/200", "ir50/100/152",
            "ir_se50/100/152"), a family name ("iresnet", "ir", "ir_se") together with
            ``layers``, a custom name as returned by :func:`detect_arcface_arch`
            ("iresnet-1-1-1-1-c16"), or an :class:`ArcFaceSpec`.
        layers: units per stage; only with a family name.
        base_channels: stage-1 width; 64 matches released weights. A small random identity
            network for fast tests: ``build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8)``
            (about 1.7 M parameters; still 112x112 in, 512-d normalised out).
        embedding_dim: output size.
        seed: seed of the weight init (None: PyTorch's default init, not reproducible).
        device: where to put the network.
    Returns:
        The network in eval mode. ``net(images)`` maps (N, 3, 112, 112) in [-1, 1] to
        (N, embedding_dim) L2-normalised; ``net.spec`` describes it.
    Raises:
        InputError: unknown arch or inconsistent options.
    """
    spec = arch if isinstance(arch, ArcFaceSpec) else _spec_from_arch(arch, layers, base_channels, embedding_dim)
    net = _build_from_spec(spec)
    if seed is not None:
        _init_random(net, torch.Generator().manual_seed(int(seed)))
    if device is not None:
        net = net.to(device)
    return net.eval()


# =============================================================================================
# 2. Loading
# =============================================================================================

def _is_contiguous_from_zero(indices: Sequence[int]) -> bool:
    return sorted(indices) == list(range(len(indices)))


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _infer_iresnet(sd: Mapping[str, Any]) -> ArcFaceSpec | None:
    layers = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{stage}\.(\d+)\.conv1\.weight$", k))}
        if not idx or not _is_contiguous_from_zero(list(idx)):
            return None
        layers.append(len(idx))
    base = _shape(sd["conv1.weight"])[0]
    fc = _shape(sd["fc.weight"])
    return ArcFaceSpec("iresnet", tuple(layers), base, fc[0])


def _infer_ir(sd: Mapping[str, Any]) -> ArcFaceSpec | None:
    idx = sorted(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.res_layer\.1\.weight$", k)))
    if not idx or not _is_contiguous_from_zero(idx):
        return None
    depths = [_shape(sd[f"body.{i}.res_layer.1.weight"])[0] for i in idx]
    base = _shape(sd["input_layer.0.weight"])[0]
    # stage 1 starts at body.0 (its first unit keeps the width); later stages start where it grows
    layers, prev = [], None
    for d in depths:
        if prev is None or d != prev:
            layers.append(0)
        layers[-1] += 1
        prev = d
    if len(layers) != 4:
        return None
    has_se = [f"body.{i}.res_layer.5.fc1.weight" in sd for i in idx]
    if any(has_se) != all(has_se):
        return None
    reduction = 16
    if has_se[0]:  # from the widest unit: narrow ones may have clamped hidden sizes (max(1, c // r))
        last = idx[-1]
        hidden = _shape(sd[f"body.{last}.res_layer.5.fc1.weight"])[0]
        reduction = max(1, depths[-1] // max(1, hidden))
    emb = _shape(sd["output_layer.3.weight"])[0]
    return ArcFaceSpec("ir_se" if has_se[0] else "ir", tuple(layers), base, emb, reduction,
                       "output_layer.4.weight" in sd)


def _infer_spec(sd: Mapping[str, Any]) -> ArcFaceSpec | None:
    try:
        if all(k in sd for k in ("conv1.weight", "fc.weight", "features.running_var")):
            return _infer_iresnet(sd)
        if all(k in sd for k in ("input_layer.0.weight", "output_layer.3.weight")):
            return _infer_ir(sd)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError, InputError):
        return None
    return None


def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(sd)
    while out and all(isinstance(k, str) and k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def _read_checkpoint(path: "str | os.PathLike[str]") -> Any:

    return safe_torch_load(path)


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap_state_dict(obj: Any, path: "str | os.PathLike[str] | None") -> dict[str, torch.Tensor]:
    """Checkpoint object -> flat tensor dict without ``module.`` prefixes (or CheckpointError)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"contains a {type(obj).__name__}, expected a state dict of tensors")
    keys = [str(k) for k in obj]
    if "g_ema" in obj or ("g" in obj and "d" in obj):
        raise CheckpointError(path, "is a StyleGAN2 checkpoint (keys " + ", ".join(keys[:5])
                              + "), not an ArcFace network; load it with facelib.load_generator")
    if _is_tensor_dict(obj):
        sd = _strip_prefix(obj)
        if any(k.startswith(("style.", "convs.", "to_rgbs.", "synthesis.", "mapping.")) for k in sd):
            raise CheckpointError(path, "holds StyleGAN2 generator weights, not an ArcFace network; "
                                        "load it with facelib.load_generator")
        return sd
    for wrapper in ("state_dict", "model", "backbone"):
        if _is_tensor_dict(obj.get(wrapper)):
            logger.info("%s: using the state dict stored under %r", path or "<state dict>", wrapper)
            return _unwrap_state_dict(obj[wrapper], path)
    raise CheckpointError(path, "is a dict without a state dict of tensors (keys: "
                          + ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") + ")")


def _unknown_layout(sd: Mapping[str, Any], path: "str | os.PathLike[str] | None") -> CheckpointError:
    sample = ", ".join(list(sd)[:4])
    return CheckpointError(
        path, f"unknown network layout ({len(sd)} tensors; first keys: {sample}). Expected an insightface "
              "arcface_torch IResNet (conv1.weight, layer1.0.conv1.weight, fc.weight, features.*) or a "
              "pSp/TreB1eN IR / IR-SE Backbone (input_layer.0.weight, body.N.res_layer.*, output_layer.*)")


def detect_arcface_arch(path_or_state_dict: "str | os.PathLike[str] | Mapping[str, Any]") -> str | None:
    """Identify an identity network from its state-dict keys and shapes.

    Args:
        path_or_state_dict: a state dict (tensors or anything with ``.shape``; ``module.``
            prefixes are ignored) or a checkpoint path (read without executing code).
    Returns:
        "iresnet18" / "iresnet34" / "iresnet50" / "iresnet100" / "iresnet200", "ir_se50" /
        "ir_se100" / "ir_se152", "ir50" / "ir100" / "ir152"; a custom name such as
        "iresnet-1-1-1-1-c16" for other block counts or widths; None when the layout is not
        one of these families. The name is from the layout alone: :func:`load_arcface` still
        checks every key and shape.
    Raises:
        CheckpointError: a path that cannot be read as a weight file.
    """
    if isinstance(path_or_state_dict, Mapping) and path_or_state_dict and all(
            hasattr(v, "shape") for v in path_or_state_dict.values()):
        sd = _strip_prefix(path_or_state_dict)  # also shape-only stand-ins (e.g. meta tensors)
    else:
        is_path = not isinstance(path_or_state_dict, Mapping)
        obj = _read_checkpoint(path_or_state_dict) if is_path else path_or_state_dict  # may raise
        try:
            sd = _unwrap_state_dict(obj, path_or_state_dict if is_path else None)
        except CheckpointError:  # readable, but not a network state dict
            return None
    spec = _infer_spec(sd)
    return None if spec is None else spec.name


def _check_keys(net: nn.Module, sd: dict[str, torch.Tensor], arch: str,
                path: "str | os.PathLike[str] | None") -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k}: file {_shape(sd[k])} vs network {_shape(expected[k])}"
                  for k in expected if k in sd and _shape(sd[k]) != _shape(expected[k])]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
        if items:
            problems.append(f"{len(items)} {label} ({'; '.join(items[:3])}{'; ...' if len(items) > 3 else ''})")
    if problems:
        raise CheckpointError(path, f"looks like {arch} but does not match its layout: " + ", ".join(problems))


def load_arcface(path_or_state_dict: "str | os.PathLike[str] | Mapping[str, Any]", *,
                 device: "torch.device | str | None" = None) -> nn.Module:
    """Load a pretrained ArcFace identity network, detecting its architecture.

    Supported: insightface ``arcface_torch`` ``backbone.pth`` (iresnet18/34/50/100/200) and
    pSp/TreB1eN ``model_ir_se50.pth`` (IR-SE50; also IR-SE100/152 and plain IR-50/100/152),
    with or without a ``module.`` prefix, fp16/bf16 tensors (cast to float32), and with or
    without BatchNorm ``num_batches_tracked`` entries. Every other key must match exactly.

    Args:
        path_or_state_dict: a checkpoint path (read with ``weights_only`` loading, no code
            execution) or an already loaded state dict.
        device: where to put the network (default: CPU).
    Returns:
        The network in eval mode with frozen parameters. ``net(images)`` maps
        (N, 3, 112, 112) float32 in [-1, 1] to (N, 512) L2-normalised embeddings;
        ``net.embed_raw(images)`` gives the un-normalised output; ``net.spec`` describes it.
    Raises:
        CheckpointError: missing, unreadable or truncated file, a StyleGAN2 or other
            checkpoint, an unknown layout, or keys/shapes that do not match the detected one.
    """
    path = None if isinstance(path_or_state_dict, Mapping) else path_or_state_dict
    obj = path_or_state_dict if path is None else _read_checkpoint(path)
    sd = _unwrap_state_dict(obj, path)
    spec = _infer_spec(sd)
    if spec is None:
        raise _unknown_layout(sd, path)
    net = _build_from_spec(spec)
    _check_keys(net, sd, spec.name, path)
    state = {}
    for k, v in sd.items():
        state[k] = v.float() if v.is_floating_point() else v
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)

    check_finite_tensors(state, path, "identity network")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # pragma: no cover - _check_keys already compared keys and shapes
        raise CheckpointError(path, f"strict load of {spec.name} failed: {str(e).splitlines()[0]}") from e
    net.requires_grad_(False)
    if device is not None:
        net = net.to(device)
    logger.info("%s: loaded %s (%d tensors)", path or "<state dict>", spec.name, len(sd))
    return net.eval()


# =============================================================================================
# 3. Identity crop
# =============================================================================================

# pSp criteria/id_loss.py: images at 256 px -> rows 35..222, cols 32..219 (188 x 188) ->
# AdaptiveAvgPool2d(112). Other multiples of 256 are first average-pooled to 256 (psp.py face_pool).
_PSP_SIZE = 256
_PSP_ROWS = (35, 223)
_PSP_COLS = (32, 220)


def _adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix equal to 1-D AdaptiveAvgPool (bins floor(i*n/m) .. ceil((i+1)*n/m))."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        a = (i * n_in) // n_out
        b = -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def _area_matrix(n_in: int, start: float, stop: float, n_out: int) -> np.ndarray:
    """(n_out, n_in) exact box-filter (area) resampling of the continuous window [start, stop).

    Pixel p covers [p, p + 1); output i averages the window slice
    [start + i*s, start + (i+1)*s), s = (stop - start) / n_out, weighting each pixel by its overlap.
    """
    m = np.zeros((n_out, n_in))
    s = (stop - start) / n_out
    for i in range(n_out):
        a, b = start + i * s, start + (i + 1) * s
        for p in range(max(0, math.floor(a)), min(n_in, math.ceil(b))):
            m[i, p] = max(0.0, min(b, p + 1) - max(a, p))
        m[i] /= m[i].sum()
    return m


@functools.lru_cache(maxsize=16)
def _crop_matrix(n: int, window: tuple[int, int]) -> np.ndarray:
    """(112, n) linear map from one image axis to the identity-crop axis."""
    if n % _PSP_SIZE == 0:
        to256 = _adaptive_pool_matrix(n, _PSP_SIZE)                       # [256, n]
        pool = _adaptive_pool_matrix(window[1] - window[0], ID_SIZE)     # [112, 188]
        return pool @ to256[window[0]:window[1]]
    scale = n / _PSP_SIZE
    return _area_matrix(n, window[0] * scale, window[1] * scale, ID_SIZE)


def identity_crop(images: torch.Tensor) -> torch.Tensor:
    """Cut the inner-face window the identity networks expect out of FFHQ-aligned images.

    For sides that are multiples of 256 this is exactly pSp's id-loss path: average-pool to
    256 (AdaptiveAvgPool2d), take rows 35..222 and columns 32..219, AdaptiveAvgPool2d to
    112. For any other side the same window is scaled to the image (rows 35/256*H ..
    223/256*H, columns 32/256*W .. 220/256*W, fractional) and box-filtered to 112 by exact
    area weighting (a pixel contributes in proportion to its overlap with each output cell).
    Both are fixed linear maps applied separably, so the crop is differentiable.

    Args:
        images: (N, 3, H, W) float RGB in [-1, 1], FFHQ-aligned, H and W >= 8.
    Returns:
        (N, 3, 112, 112) in the same dtype and device.
    Raises:
        ShapeError: not a (N, 3, H, W) batch, or smaller than 8 px.
    """
    check_shape("images", images, (None, 3, None, None))
    h, w = int(images.shape[2]), int(images.shape[3])
    if min(h, w) < 8:
        raise ShapeError(f"images: expected H, W >= 8, got {tuple(images.shape)}",
                         actual_shape=images.shape, expected_shape=(None, 3, None, None))
    dtype = images.dtype if images.is_floating_point() else torch.float32
    rows = torch.as_tensor(_crop_matrix(h, _PSP_ROWS), dtype=dtype, device=images.device)  # [112, H]
    cols = torch.as_tensor(_crop_matrix(w, _PSP_COLS), dtype=dtype, device=images.device)  # [112, W]
    return torch.matmul(torch.matmul(rows, images.to(dtype)), cols.t())  # [N, 3, 112, 112]
