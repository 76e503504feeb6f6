"""Memory estimates for optimisation runs, and the device's free memory.

Projection (and face swap, which optimises through the same generator) holds, per image, every
activation of one generator forward pass for the backward pass, the per-image modulated
convolution weights, and the LPIPS VGG16 activations of the rendering. :func:`projection_bytes`
adds these up from the generator's width table; the per-term factors were fitted to measured
peak resident memory on CPU (``benchmarks/memory.py`` prints estimate against measurement).

:func:`free_bytes` reads what the device can still give: ``torch.cuda.mem_get_info`` on CUDA;
on CPU the smaller of the kernel's ``MemAvailable`` and the cgroup limit (containers, Kaggle).
:func:`plan_batch` combines both to pick a batch size before anything large is allocated, and
refuses with the estimate when a single image cannot fit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import MemoryLimitError, RangeError

__all__ = ["projection_bytes", "tuning_bytes", "free_bytes", "plan_batch", "BatchPlan", "check_fits",
           "is_out_of_memory", "split_after_out_of_memory", "format_bytes"]

log = logging.getLogger(__name__)

_F32 = 4
# Fitted on CPU (float32): saved tensors per generator activation value (input, modulated conv output,
# noise add, bias+leaky ReLU, upsampling, their gradients), per modulated weight value (weight, its
# gradient, the grouped-conv copy) and per VGG16 activation value (forward + backward).
_ACT_FACTOR = 1.9
_WEIGHT_FACTOR = 0.9
_VGG_FACTOR = 2.0
_VGG16_PARAMS = 14_714_688  # torchvision vgg16().features
# loading LPIPS on CPU briefly holds the whole torchvision vgg16 (138 M parameters) and its state dict
_VGG16_LOAD_BYTES = 2 * 138_357_544 * _F32
# Python, torch and the libraries' own resident memory before any model is built
_BASE_BYTES = 450 * 2 ** 20
#: Share of the free memory a run plans to use (the rest absorbs allocator slack and other processes).
HEADROOM = 0.8


def format_bytes(n: float) -> str:
    """``1.5 GB`` style (powers of 1024)."""
    for unit, scale in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _vgg_activation_values(size: int) -> int:
    # conv widths of VGG16's five blocks (2, 2, 3, 3, 3 convs), each block at half the side of the last
    total, side = 0, size
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        total += width * side * side * convs
        side //= 2
    return total


def projection_bytes(G: Any, batch: int, *, lpips: bool = True, lpips_size: int = 256,
                     include_base: bool = True) -> int:
    """Estimated peak memory (bytes) of optimising ``batch`` images through ``G`` (projection or swap).

    Args:
        G: a :class:`facelib.stylegan2.StyleGAN2Generator` (uses ``resolution``, ``channels``, ``style_dim``)
            or anything with those attributes.
        batch: images optimised together (>= 1).
        lpips: whether the LPIPS VGG16 term runs.
        lpips_size: side at which LPIPS sees the images.
        include_base: add the interpreter's and libraries' own resident memory (CPU figures).
    Returns:
        bytes (an estimate; ``benchmarks/memory.py`` compares it with measured peaks).
    """
    res = int(G.resolution)
    channels = {int(r): int(c) for r, c in dict(G.channels).items()}
    log_res = int(math.log2(res))
    act = 0  # activation values of one image's forward pass
    weights = 0  # per-image modulated conv weight values
    prev = channels[4]
    for k in range(2, log_res + 1):
        r = 2 ** k
        c = channels[r]
        convs = 1 if r == 4 else 2
        act += c * r * r * convs + 3 * r * r  # convs + toRGB
        if r > 4:
            act += prev * r * r * 2  # upsampled input before the blur
        weights += (prev * c * 9 if r > 4 else c * c * 9) + (c * c * 9 if r > 4 else 0) + c * 3
        prev = c
    params = sum(p.numel() for p in G.parameters()) if hasattr(G, "parameters") else 0
    per_image = _F32 * (_ACT_FACTOR * act + _WEIGHT_FACTOR * weights)
    fixed = _F32 * params
    if lpips:
        per_image += _F32 * _VGG_FACTOR * _vgg_activation_values(lpips_size)
        fixed += _F32 * _VGG16_PARAMS + (_VGG16_LOAD_BYTES if include_base else 0)
    total = fixed + batch * per_image + (_BASE_BYTES if include_base else 0)
    return int(total)


# Pivotal tuning, per photo: its generator copy's synthesis weights times this many (the copy, its
# gradient, Adam's two moments, the kept best weights and the optimiser's temporaries), plus this
# share of a projection's per-image activations (the weights are not modulated per image). Both
# factors were fitted to the peak RSS growth measured on CPU at 256 and 1024 px
# (benchmarks/results/tuning_cpu.json: 1.95 and 3.58 GB for one photo).
_TUNE_PARAM_FACTOR = 13.5
_TUNE_ACT_SHARE = 0.72


def tuning_bytes(G: Any, batch: int, *, lpips: bool = True, lpips_size: int = 256, include_base: bool = True) -> int:
    """Estimated peak memory (bytes) of pivotal tuning ``batch`` photos together through ``G`` (one
    generator copy per photo; :func:`facelib.tuning.tune_generator`). Arguments as for
    :func:`projection_bytes`."""
    one = projection_bytes(G, 1, lpips=False, include_base=False)
    params = sum(p.numel() for p in G.parameters()) if hasattr(G, "parameters") else 0
    synth = sum(p.numel() for k, p in G.named_parameters() if not k.startswith("style.")) \
        if hasattr(G, "named_parameters") else 0
    per_photo = _TUNE_ACT_SHARE * (one - _F32 * params) + _TUNE_PARAM_FACTOR * _F32 * synth
    fixed = _F32 * params
    if lpips:
        per_photo += _F32 * _VGG_FACTOR * _vgg_activation_values(lpips_size)
        fixed += _F32 * _VGG16_PARAMS + (_VGG16_LOAD_BYTES if include_base else 0)
    return int(fixed + batch * per_photo + (_BASE_BYTES if include_base else 0))


_ESTIMATES = {"projection": projection_bytes, "tuning": tuning_bytes}


def _cgroup_free() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) > 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def free_bytes(device: "str | torch.device" = "cpu") -> int | None:
    """Memory the device can still give, in bytes; None when it cannot be told (e.g. MPS).

    CUDA: ``torch.cuda.mem_get_info``. CPU: ``MemAvailable`` from /proc/meminfo, capped by the
    cgroup's limit minus its usage when there is one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001 - no driver / no device: unknown
            return None
    if device.type != "cpu":
        return None
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    cg = _cgroup_free()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


@dataclass(frozen=True)
class BatchPlan:
    """What :func:`plan_batch` decided.

    Attributes:
        batch: images to optimise together.
        estimate: estimated peak bytes at that batch size.
        free: free bytes on the device (None = unknown).
        note: a sentence for the user (why this batch), empty when the request fitted as given.
    """

    batch: int
    estimate: int
    free: int | None
    note: str = ""


def plan_batch(G: Any, device: "str | torch.device", *, requested: int | None = None, default: int = 4,
               lpips: bool = True, lpips_size: int = 256, n_images: int | None = None,
               free: int | None = None, what: str = "projection", kind: str = "projection") -> BatchPlan:
    """Choose a batch size from the device's free memory before anything large is allocated.

    Without ``requested`` the largest batch up to ``default`` whose estimate fits in
    :data:`HEADROOM` of the free memory is used. A requested batch that does not fit is
    reduced (the note says so). When even one image does not fit, :class:`RangeError` says
    the estimate and the free memory.

    Args:
        G: the generator; device: where the run happens.
        requested: the user's batch size (None = choose).
        default: the largest batch chosen without a request.
        lpips, lpips_size: whether and at which side the LPIPS term runs.
        n_images: images to do (the batch never exceeds it).
        free: free bytes (default: :func:`free_bytes`); for tests.
        what: the kind of run, for messages.
        kind: which estimate: "projection" (:func:`projection_bytes`, also the face swap) or
            "tuning" (:func:`tuning_bytes`).
    Raises:
        RangeError: ``requested`` < 1. MemoryLimitError (a RangeError): one image's estimate exceeds the
            free memory.
    """
    if requested is not None and (isinstance(requested, bool) or int(requested) < 1):
        raise RangeError(f"batch_size: expected >= 1, got {requested!r}")
    estimate = _ESTIMATES[kind]
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    if free is None:
        free = free_bytes(device)
    want = int(requested) if requested is not None else int(default)
    if n_images is not None:
        want = max(1, min(want, int(n_images)))

    def need(b: int) -> int:
        return estimate(G, b, lpips=lpips, lpips_size=lpips_size, include_base=on_cpu)

    if free is None:
        return BatchPlan(want, need(want), None, "")
    budget = free * HEADROOM
    if need(1) > free:
        raise MemoryLimitError(f"{what} at {G.resolution} px needs about {format_bytes(need(1))} for one image "
                         f"but {device} has {format_bytes(free)} free; use a smaller generator, a device "
                         "with more memory, or close other programs")
    batch = want
    while batch > 1 and need(batch) > budget:
        batch -= 1
    if batch == want and requested is not None:
        return BatchPlan(batch, need(batch), free, "")
    if requested is not None:
        note = (f"batch size {requested} would need about {format_bytes(need(requested))} but {device} has "
                f"{format_bytes(free)} free; using {batch} (about {format_bytes(need(batch))})")
    else:
        note = (f"batch size {batch} chosen from {format_bytes(free)} free on {device} "
                f"(about {format_bytes(need(batch))})")
    return BatchPlan(batch, need(batch), free, note)


def check_fits(G: Any, device: "str | torch.device", batch: int, *, lpips: bool = True, lpips_size: int = 256,
               what: str = "projection", free: int | None = None, kind: str = "projection") -> None:
    """Refuse, before anything large is allocated, to optimise ``batch`` images together when the
    estimate (models already loaded, so without the interpreter's base) exceeds the free memory.

    Raises:
        MemoryLimitError: with the estimate, the free memory and what to do.
    """
    device = torch.device(device)
    if free is None:
        free = free_bytes(device)
    if free is None:
        return
    need = _ESTIMATES[kind](G, batch, lpips=lpips, lpips_size=lpips_size, include_base=False)
    if need > free:
        hint = ("fewer images at a time (facelib.project_folder chooses the batch)" if batch > 1
                else "a device with more memory, or close other programs")
        raise MemoryLimitError(f"{what} of {batch} image(s) at {G.resolution} px needs about {format_bytes(need)} but "
                         f"{device} has {format_bytes(free)} free; use {hint}")


def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and the CPU allocator's "can't allocate memory" errors."""
    if isinstance(e, getattr(torch, "OutOfMemoryError", ())) or isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, MemoryError)) and (
        isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text
        or "cannot allocate memory" in text)


def split_after_out_of_memory(e: BaseException, batch: list, device: "str | torch.device",
                              what: str = "images") -> tuple[list[list], str] | None:
    """What a batch job does after ``e`` ended a batch: None when ``e`` is not an out-of-memory
    error (re-raise it); ``([], reason)`` when the batch held one item (it fails with
    ``reason``); else ``([first half, second half], note)`` to go on with (the CUDA cache is
    emptied first)."""
    if not isinstance(e, MemoryLimitError) and not is_out_of_memory(e):
        return None
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if len(batch) == 1:
        return [], (str(e) if isinstance(e, MemoryLimitError) else f"out of memory even for one of the {what} on {device}")
    half = len(batch) // 2
    return [batch[:half], batch[half:]], f"out of memory with {len(batch)} {what} together; going on with {half}"
