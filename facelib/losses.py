"""Loss terms shared by projection and face swap.

* :class:`LPIPSLoss`: the learned perceptual distance of the ``lpips`` package (VGG16 trunk),
  per image, with inputs area-downsampled to 256 px as the StyleGAN projectors do. Weights
  are read from local files only; nothing is ever downloaded (see :func:`load_lpips_vgg`).
* :func:`resolve_lpips`: turn a user's ``lpips=`` option ("auto", "vgg", None or a module)
  into a loss module or None, warning once when "auto" has to go without.
* :func:`noise_regularize` / :func:`normalize_noises_`: StyleGAN2's multi-scale noise
  autocorrelation penalty and the renormalisation applied after every optimiser step.
* :func:`identity_loss`: 1 - cosine similarity of identity-network embeddings.
* :func:`mse_per_image`, :func:`psnr`.

Every loss here returns one value per image, shape (N,), so an optimiser can sum them and
still give each image a gradient that does not depend on the other images of the batch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, DependencyError, InputError, check_shape
from .identity import identity_crop
from .paths import search_dirs
from .weights import safe_torch_load

__all__ = [
    "VGG16_FILENAMES",
    "LPIPSLoss",
    "find_vgg16_weights",
    "load_lpips_vgg",
    "resolve_lpips",
    "noise_regularize",
    "normalize_noises_",
    "identity_loss",
    "identity_similarity",
    "mse_per_image",
    "psnr",
    "downsample_to",
]

log = logging.getLogger(__name__)

#: File names accepted for torchvision's ImageNet VGG16 (``vgg16-397923af.pth`` is the name
#: torchvision caches it under; a renamed copy ``vgg16.pth`` is accepted as well).
VGG16_FILENAMES = ("vgg16-397923af.pth", "vgg16.pth")

# lpips's vgg16 wrapper copies torchvision's ``features`` children into five Sequentials
# keeping their indices: slice1 = 0..3, slice2 = 4..8, slice3 = 9..15, slice4 = 16..22,
# slice5 = 23..29 (lpips/pretrained_networks.py, class vgg16).
_LPIPS_SLICES = ((1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30))
# indices of the 13 conv layers inside torchvision's vgg16().features
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

_WARNED: set[str] = set()  # messages already logged (warn once per process)
_LPIPS_CACHE: dict[tuple, Any] = {}  # (file, mtime, size, device) -> lpips.LPIPS


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message)


# ----------------------------------------------------------------------------------------
# Small per-image terms
# ----------------------------------------------------------------------------------------

def mse_per_image(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image: (N, C, H, W) x2 -> (N,)."""
    return (images - targets).square().flatten(1).mean(1)


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2, so the same figure as for [0, 1]).

    Args:
        images, targets: (N, 3, H, W) in [-1, 1].
    Returns:
        (N,) float; ``inf`` for identical images.
    """
    mse = mse_per_image(images.float(), targets.float())
    return 10.0 * torch.log10(4.0 / mse)


def downsample_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-downsample (N, C, H, W) so the larger side is at most ``size``; smaller inputs pass through.

    For integer factors this is the block mean the StyleGAN projectors use before LPIPS.
    """
    h, w = images.shape[-2:]
    if max(h, w) <= size:
        return images
    if h % size == 0 and w % size == 0 and h == w:
        k = h // size
        return F.avg_pool2d(images, k)
    scale = size / max(h, w)
    return F.adaptive_avg_pool2d(images, (max(1, round(h * scale)), max(1, round(w * scale))))


def noise_regularize(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's noise regulariser, per image.

    For every noise map and every scale (the map, then 2x2 block means down to 8x8) it adds
    the squared mean of the map times itself shifted by one pixel horizontally, and the same
    vertically: white noise scores about 0, noise that carries image structure scores high.
    Maps of 8x8 or less contribute at their own size only. (Karras et al. 2020, appendix; the
    same sum as the official and rosinality projectors, taken per image instead of over the
    batch.)

    Maps of the same size are stacked and pushed down the pyramid together, so a 1024 px
    generator's 17 maps cost one pass over 9 scales instead of 17 separate pyramids.

    Args:
        noises: tensors (N, 1, r, r) (or (N, C, r, r)), r a power of two.
    Returns:
        (N,) float.
    """
    if not noises:
        raise InputError("noise_regularize: expected at least one noise tensor")
    by_size: dict[int, list[torch.Tensor]] = {}
    for noise in noises:
        by_size.setdefault(int(noise.shape[-1]), []).append(noise)

    def autocorrelation(x: torch.Tensor) -> torch.Tensor:  # [N, K, r, r] -> [N]
        return ((x * torch.roll(x, shifts=1, dims=3)).mean((2, 3)).square().sum(1)
                + (x * torch.roll(x, shifts=1, dims=2)).mean((2, 3)).square().sum(1))

    size = max(by_size)
    total = None
    carried: torch.Tensor | None = None  # larger maps, block-averaged down to `size`
    while True:
        parts = ([carried] if carried is not None else []) + by_size.get(size, [])
        x = torch.cat(parts, 1) if len(parts) > 1 else parts[0] if parts else None
        if x is not None:
            term = autocorrelation(x)
            total = term if total is None else total + term
        if size <= 8:
            break
        if x is not None:
            n, k = x.shape[:2]
            carried = x.reshape(n, k, size // 2, 2, size // 2, 2).mean((3, 5))
        size //= 2
    for small in sorted(r for r in by_size if r < size):  # below 8x8: one term at their own size
        total = total + autocorrelation(torch.cat(by_size[small], 1))
    return total


@torch.no_grad()
def normalize_noises_(noises: Sequence[torch.Tensor]) -> None:
    """In place: give every image's noise map zero mean and unit standard deviation.

    Args:
        noises: tensors (N, 1, r, r); each image (and layer) is normalised separately.
    """
    for noise in noises:
        std, mean = torch.std_mean(noise, dim=tuple(range(1, noise.ndim)), keepdim=True)
        noise.sub_(mean).div_(std.clamp_min(1e-12))


def identity_similarity(id_net: nn.Module, images: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the identity embeddings of ``images`` and ``target_emb``.

    Args:
        id_net: maps (N, 3, 112, 112) in [-1, 1] to (N, 512) L2-normalised embeddings.
        images: (N, 3, H, W) in [-1, 1], FFHQ-aligned (cut with ``facelib.identity.identity_crop``).
        target_emb: (N, E) or (1, E) embeddings (normalised again here).
    Returns:
        (N,) in [-1, 1]; differentiable w.r.t. ``images``.
    """
    check_shape("images", images, (None, 3, None, None))
    emb = id_net(identity_crop(images))  # [N, E]
    if target_emb.ndim != 2 or target_emb.shape[1] != emb.shape[1] or target_emb.shape[0] not in (1, emb.shape[0]):
        raise InputError(f"target_emb: expected shape ({emb.shape[0]} or 1, {emb.shape[1]}), "
                         f"got {tuple(target_emb.shape)}")
    return (F.normalize(emb, dim=1) * F.normalize(target_emb.to(emb), dim=1)).sum(1)


def identity_loss(id_net: nn.Module, images: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of identity embeddings, per image: (N,) in [0, 2].

    Args: as :func:`identity_similarity`.
    """
    return 1.0 - identity_similarity(id_net, images, target_emb)


# ----------------------------------------------------------------------------------------
# LPIPS (offline)
# ----------------------------------------------------------------------------------------

def _search_dirs() -> list[Path]:
    try:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # a broken TORCH_HOME should not break the search
        hub = Path("~/.cache/torch/hub/checkpoints").expanduser()
    return search_dirs(extra=[hub], package_models=False)


def find_vgg16_weights(vgg_path: "str | os.PathLike[str] | None" = None) -> Path | None:
    """Local copy of torchvision's ImageNet VGG16 weights, or None.

    Looked up in this order: ``vgg_path`` (a file, or a folder holding one of
    :data:`VGG16_FILENAMES`; when given it must exist); ``$FACELIB_DATA`` folders
    (``os.pathsep``-separated); Kaggle datasets (``/kaggle/input/*/``, up to two levels
    deeper); ``./data/`` and the repository's ``data/``; torchvision's cache
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``).

    Raises:
        DependencyError: ``vgg_path`` was given but holds no such file.
    """
    if vgg_path is not None:
        p = Path(vgg_path).expanduser()
        if p.is_dir():
            for name in VGG16_FILENAMES:
                if (p / name).is_file():
                    return p / name
            raise DependencyError(f"{p}: no VGG16 weights in this folder (expected one of {VGG16_FILENAMES})")
        if not p.is_file():
            raise DependencyError(f"{p}: VGG16 weight file not found")
        return p
    for d in _search_dirs():
        for name in VGG16_FILENAMES:
            if (d / name).is_file():
                return d / name
    return None


#: How the entry point in use spells the LPIPS options (the command line sets its flags).
_OPTION_NAMES = {"lpips_off": "lpips=None", "lpips_required": "lpips='vgg'", "vgg_path": "vgg_path=..."}


def use_option_names(**names: str) -> dict[str, str]:
    """Name the LPIPS options as the current entry point spells them in messages, e.g.
    ``use_option_names(lpips_off="--lpips none", lpips_required="--lpips vgg", vgg_path="--vgg-path")``.
    Returns the previous names (pass them back to restore)."""
    unknown = sorted(set(names) - set(_OPTION_NAMES))
    if unknown:
        raise InputError(f"use_option_names: unknown names {unknown}; known: {sorted(_OPTION_NAMES)}")
    previous = dict(_OPTION_NAMES)
    _OPTION_NAMES.update(names)
    return previous


def _missing_vgg_message() -> str:
    where = ", ".join(str(d) for d in _search_dirs())
    return ("LPIPS needs torchvision's ImageNet VGG16 weights (vgg16-397923af.pth, 528 MB) and facelib "
            f"never downloads them; looked in {where}. Put the file in one of these folders (e.g. "
            f"~/.cache/torch/hub/checkpoints/ or a Kaggle dataset), name it with {_OPTION_NAMES['vgg_path']}, or "
            "fetch it once on a machine with internet: python -c \"import torchvision; "
            "torchvision.models.vgg16(weights='IMAGENET1K_V1')\". "
            f"Pass {_OPTION_NAMES['lpips_off']} to go without LPIPS.")


def _lpips_off_notice() -> str:
    """The one-line notice when "auto" goes without LPIPS."""
    return (f"LPIPS is off: no vgg16-397923af.pth found locally (`python -m facelib data status` shows where "
            f"it looks); {_OPTION_NAMES['vgg_path']} names one, {_OPTION_NAMES['lpips_required']} makes this an "
            f"error, {_OPTION_NAMES['lpips_off']} silences it.")


_REMEMBER = {"notices": False}  # the command line remembers shown notices across runs


def remember_notices(on: bool) -> bool:
    """Whether a notice shown once (LPIPS off) stays quiet in later processes (the command line turns
    this on; library and notebook use warn once per process). Returns the previous setting."""
    previous = _REMEMBER["notices"]
    _REMEMBER["notices"] = bool(on)
    return previous


def _notice_marker() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facelib" / "notice-lpips-off"


def _notice_lpips_off() -> None:
    """Warn once per process; with :func:`remember_notices` on (the command line), once at all: later
    processes log it at debug level only (the marker lives in the user's cache folder and is removed
    when VGG16 weights are found)."""
    if "lpips-auto" in _WARNED:
        return
    _WARNED.add("lpips-auto")
    if not _REMEMBER["notices"]:
        log.warning("%s", _lpips_off_notice())
        return
    marker = _notice_marker()
    if marker.is_file():
        log.debug("%s", _lpips_off_notice())
        return
    log.warning("%s", _lpips_off_notice())
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("the LPIPS-off notice was shown; delete this file to see it again\n")
    except OSError:
        pass


def _import_lpips() -> Any:
    try:
        import lpips  # optional heavy dependency, only for LPIPS
    except ImportError as e:
        raise DependencyError("LPIPS needs the 'lpips' package: pip install lpips") from e
    return lpips


def _vgg_trunk_state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """torchvision VGG16 state dict (``features.N.*`` or bare ``N.*``) -> lpips trunk keys."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(path, f"expected a VGG16 state dict, found a {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    out: dict[str, torch.Tensor] = {}
    missing = []
    for idx in _VGG16_CONVS:
        slice_no = next(s for s, lo, hi in _LPIPS_SLICES if lo <= idx < hi)
        for kind in ("weight", "bias"):
            src = f"{prefix}{idx}.{kind}"
            if not torch.is_tensor(state.get(src)):
                missing.append(src)
                continue
            out[f"net.slice{slice_no}.{idx}.{kind}"] = state[src]
    if missing:
        raise CheckpointError(path, f"not a torchvision VGG16 state dict: missing {missing[:4]}"
                                    f"{' ...' if len(missing) > 4 else ''}")
    return out


def load_lpips_vgg(vgg_path: "str | os.PathLike[str] | None" = None, *,
                   device: "str | torch.device | None" = None) -> nn.Module:
    """Build ``lpips.LPIPS(net='vgg')`` from local files only.

    The module is built with ``pnet_rand=True`` (torchvision is never asked for pretrained
    weights, so nothing is downloaded); the VGG16 ``features`` weights are then copied from
    the local torchvision file into lpips's trunk (``features.N`` -> ``net.slice{k}.N``, same
    child indices), and the linear heads come from the lpips package itself
    (``lpips/weights/v0.1/vgg.pth``). Modules are cached per file and device.

    Args:
        vgg_path: the VGG16 file or a folder holding it; None searches (:func:`find_vgg16_weights`).
        device: where to put the module (default CPU).
    Returns:
        An ``lpips.LPIPS`` in eval mode with frozen parameters.
    Raises:
        DependencyError: lpips is not installed or no VGG16 file was found (the message says
            where it looked and how to get the file).
        CheckpointError: the file is unreadable or is not a VGG16 state dict.
    """
    lpips = _import_lpips()
    path = find_vgg16_weights(vgg_path)
    if path is None:
        raise DependencyError(_missing_vgg_message())
    stat = path.stat()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    trunk = _vgg_trunk_state(safe_torch_load(path), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for pretrained=False
        net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in trunk.items() if own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(path, f"VGG16 weights of the wrong shape: {wrong[:3]}")
    with torch.no_grad():
        for k, v in trunk.items():
            own[k].copy_(v.to(own[k].dtype))
    net.eval().requires_grad_(False)
    net = net.to(dev)
    net.facelib_source = str(path)
    log.info("LPIPS: VGG16 trunk loaded from %s", path)
    _LPIPS_CACHE[key] = net
    return net


class LPIPSLoss(nn.Module):
    """Per-image LPIPS distance with the projectors' 256 px downsampling.

    Args:
        net: an ``lpips.LPIPS`` module (``lpips=True``, ``spatial=False``, any trunk); None
            builds the VGG one from local files (:func:`load_lpips_vgg`).
        vgg_path: VGG16 weight file or folder when ``net`` is None.
        size: inputs larger than this are area-downsampled to it first (256, as in the
            NVIDIA and rosinality projectors); smaller inputs are used as they are.

    ``forward(images, targets)``: (N, 3, H, W) x2 in [-1, 1] -> (N,) distances. Targets that
    stay fixed during an optimisation can be prepared once with :meth:`features` and passed to
    :meth:`distance` instead, which halves the trunk work per step.

    Raises:
        DependencyError, CheckpointError: as :func:`load_lpips_vgg`.
    """

    def __init__(self, net: "nn.Module | None" = None, *, vgg_path: "str | os.PathLike[str] | None" = None,
                 size: int = 256) -> None:
        super().__init__()
        if net is None:
            net = load_lpips_vgg(vgg_path)
        if not all(hasattr(net, a) for a in ("scaling_layer", "net", "lins", "L")):
            raise InputError(f"LPIPSLoss: net must be an lpips.LPIPS module, got {type(net).__name__}")
        if getattr(net, "spatial", False) or not getattr(net, "lpips", True):
            raise InputError("LPIPSLoss: net must be built with lpips=True, spatial=False")
        self.net = net
        self.size = int(size)
        self.source = getattr(net, "facelib_source", None)

    def extra_repr(self) -> str:
        return f"trunk={getattr(self.net, 'pnet_type', '?')}, size={self.size}, source={self.source}"

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised trunk features of (N, 3, H, W) images in [-1, 1] (after downsampling)."""
        lp = _import_lpips()
        check_shape("images", images, (None, 3, None, None))
        x = self.net.scaling_layer(downsample_to(images, self.size))
        return [lp.normalize_tensor(f) for f in self.net.net(x)]

    def distance(self, images: torch.Tensor, target_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """LPIPS of ``images`` (N, 3, H, W) to prepared target features (N or 1 per layer) -> (N,)."""
        feats = self.features(images)
        total = None
        for k, (f0, f1) in enumerate(zip(feats, target_features)):
            d = self.net.lins[k]((f0 - f1).square()).mean((2, 3))  # [N, 1]
            total = d if total is None else total + d
        return total[:, 0]

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.distance(images, self.features(targets))


def resolve_lpips(spec: "str | nn.Module | None", *, vgg_path: "str | os.PathLike[str] | None" = None,
                  device: "str | torch.device | None" = None, size: int = 256) -> LPIPSLoss | None:
    """Turn an ``lpips=`` option into a loss module, or None when LPIPS is off.

    Args:
        spec: ``"auto"`` = VGG LPIPS when its weights are found locally, else log one warning
            and return None (the caller goes on with its other losses; a ``vgg_path`` that
            was named must load, though); ``"vgg"`` = VGG LPIPS
            or a :class:`DependencyError` saying how to get the weights; ``None`` / ``"none"``
            = off; an ``lpips.LPIPS`` or :class:`LPIPSLoss` module = use it.
        vgg_path: VGG16 file or folder (see :func:`find_vgg16_weights`).
        device: device of the returned module.
        size: LPIPS working size (inputs are downsampled to it).
    Raises:
        DependencyError: ``"vgg"`` without lpips or without local weights.
        InputError: an unknown option.
    """
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, LPIPSLoss):
        return spec.to(device) if device is not None else spec
    if isinstance(spec, nn.Module):
        spec.eval().requires_grad_(False)
        loss = LPIPSLoss(spec, size=size)
        return loss.to(device) if device is not None else loss
    if not isinstance(spec, str) or spec.lower() not in ("auto", "vgg"):
        raise InputError(f"lpips: expected 'auto', 'vgg', None or an lpips.LPIPS module, got {spec!r}")
    if spec.lower() == "vgg" or vgg_path is not None:  # with "auto" too, a file the user named must load
        return LPIPSLoss(load_lpips_vgg(vgg_path, device=device), size=size)
    if find_vgg16_weights(None) is None:
        _notice_lpips_off()
        return None
    with contextlib.suppress(OSError):
        _notice_marker().unlink()  # weights are found now: show the notice again if they go missing
    try:
        return LPIPSLoss(load_lpips_vgg(None, device=device), size=size)
    except DependencyError as e:  # e.g. the lpips package itself is missing
        _warn_once("lpips-auto", f"LPIPS is off: {e}")
        return None
