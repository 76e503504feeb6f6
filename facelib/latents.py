"""W+ latents as data: named sets for the tables and previews, and latent files for the command line.

* :class:`LatentSet` / :func:`gather_latents` / :func:`latents_for`: W+ latents with their
  noise maps and names, gathered from a tensor, a Projection, a list or a {name: latent} mapping;
* :func:`save_latents` / :func:`load_latents` (:class:`SavedLatents`): ``.pt`` files with an
  ``.edit.json`` sidecar, read with ``weights_only=True``;
* :func:`generator_for`: the generator that saved latents belong to.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ._io import atomic_path
from .data import locate
from .session import smoke_generator
from .edits import as_wplus
from .errors import CheckpointError, DependencyError, InputError, check_shape
from .weights import file_sha256, load_generator, safe_torch_load

__all__ = ["LatentSet", "gather_latents", "latents_for", "SavedLatents", "load_latents", "save_latents",
           "generator_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentSet:
    """W+ latents with their noise maps and one name each (:func:`gather_latents`)."""

    wplus: torch.Tensor                      # [N, L, D]
    noises: list[torch.Tensor] | None        # per layer [N, 1, r, r], or None (G's buffers)
    names: list[str]

    def one(self, i: int) -> "LatentSet":
        """Latent ``i`` alone (a batch of 1, with its noise maps and name)."""
        return LatentSet(self.wplus[i:i + 1], None if self.noises is None else [nz[i:i + 1] for nz in self.noises],
                         [self.names[i]])


def gather_latents(x: Any, what: str) -> LatentSet:
    """Latents from a tensor, a Projection, a list of those or a {name: latent} mapping.

    Args:
        x: (n_latent, D) / (N, n_latent, D) tensors, objects with ``.wplus`` (and optionally
            ``.noises`` and ``.names``), lists of those, or {name: latent} mappings.
        what: the argument's name, for error messages and default names (``"<what>_<i>"``).
    Returns:
        A :class:`LatentSet` on the CPU, float32, ``wplus`` (N, n_latent, D).
    Raises:
        InputError: empty or not latents; ShapeError: latents of different shapes mixed.
    """
    if isinstance(x, Mapping):
        items = list(x.items())
        if not items:
            raise InputError(f"{what}: empty")
        parts = [gather_latents(v, f"{what}[{k!r}]") for k, v in items]
        names = []
        for (k, _), p in zip(items, parts):
            names += [str(k)] if len(p.names) == 1 else [f"{k}_{j}" for j in range(len(p.names))]
        return _cat(parts, what, names)
    if torch.is_tensor(x) or hasattr(x, "wplus"):
        w = as_wplus(x, what).detach().float().cpu()
        w = w if w.ndim == 3 else w[None]
        noises = getattr(x, "noises", None) or None
        if noises is not None:
            noises = [nz.detach().float().cpu() for nz in noises]
            if any(nz.shape[0] != w.shape[0] for nz in noises):
                noises = None
        names = [str(v) if v else f"{what}_{i}" for i, v in enumerate(getattr(x, "names", None) or [None] * w.shape[0])]
        return LatentSet(w, noises, names)
    if isinstance(x, Sequence) and not isinstance(x, str):
        if not x:
            raise InputError(f"{what}: empty list")
        return _cat([gather_latents(v, f"{what}[{i}]") for i, v in enumerate(x)], what, None)
    raise InputError(f"{what}: expected W+ latents (tensor, Projection, list or mapping), got {type(x).__name__}")


def _cat(parts: list[LatentSet], what: str, names: list[str] | None) -> LatentSet:
    first = parts[0].wplus
    for p in parts[1:]:
        check_shape(f"{what} (latents of one shape)", p.wplus, (None,) + tuple(first.shape[1:]))
    noises = None
    if all(p.noises is not None for p in parts) and len({len(p.noises) for p in parts}) == 1:
        noises = [torch.cat([p.noises[k] for p in parts]) for k in range(len(parts[0].noises))]
    return LatentSet(torch.cat([p.wplus for p in parts]), noises,
                     names if names is not None else [n for p in parts for n in p.names])


def latents_for(G: torch.nn.Module, x: Any, what: str) -> LatentSet:
    """:func:`gather_latents`, checking that the latents fit ``G`` ((N, G.n_latent, G.style_dim)).

    Raises:
        InputError: not latents; ShapeError: latents of another generator.
    """
    lat = gather_latents(x, what)
    check_shape(f"{what} (latents of this generator)", lat.wplus, (None, G.n_latent, G.style_dim))
    return lat


@dataclass(frozen=True)
class SavedLatents:
    """W+ latents read by :func:`load_latents`.

    Attributes:
        wplus: (N, n_latent, D) float32.
        noises: per-layer noise maps (N, 1, r, r), or None (render with G's buffers).
        names: per-latent names.
        weights_sha256: the generator they belong to, when recorded.
        weights_path: the generator file, when recorded.
        path: the file read.
    """

    wplus: torch.Tensor
    noises: list[torch.Tensor] | None
    names: list[str]
    weights_sha256: str | None
    weights_path: str | None
    path: Path


def _edit_meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".edit.json")


def load_latents(path: "str | os.PathLike[str]") -> SavedLatents:
    """Read W+ latents from a saved :class:`~facelib.project.Projection`, a ``.pt`` holding
    ``{"wplus": tensor, ...}`` (e.g. written by :func:`save_latents`) or a bare tensor.

    Files are read with ``weights_only=True``. ``(n_latent, D)`` tensors become a batch of 1.

    Raises:
        CheckpointError: missing or unreadable file, or no W+ tensor in it.
    """
    path = Path(path)
    data = safe_torch_load(path)
    meta: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    edit_meta = _edit_meta_path(path)
    for mp in (sidecar, edit_meta):
        if mp.is_file():
            try:
                loaded = json.loads(mp.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(mp, f"unreadable metadata ({e})") from None
            if isinstance(loaded, dict):
                meta.update(loaded)
    if torch.is_tensor(data):
        wplus, tensors = data, {}
    elif isinstance(data, Mapping) and torch.is_tensor(data.get("wplus")):
        wplus, tensors = data["wplus"], data
    else:
        kind = type(data).__name__
        keys = f" with keys {sorted(map(str, data))[:8]}" if isinstance(data, Mapping) else ""
        raise CheckpointError(path, f"no W+ latents: expected a projection, {{'wplus': tensor}} or a tensor, "
                                    f"found a {kind}{keys}")
    if not wplus.is_floating_point() or wplus.ndim not in (2, 3):
        raise CheckpointError(path, f"W+ must be a float tensor (n_latent, D) or (N, n_latent, D), "
                                    f"found {wplus.dtype} {tuple(wplus.shape)}")
    wplus = (wplus if wplus.ndim == 3 else wplus[None]).detach().float().cpu()
    if wplus.shape[0] == 0:
        raise CheckpointError(path, f"holds an empty batch of latents {tuple(wplus.shape)}")
    if not torch.isfinite(wplus).all():
        raise CheckpointError(path, "W+ contains NaN or inf values")
    noises: list[torch.Tensor] | None = []
    while f"noise_{len(noises)}" in tensors:
        nz = tensors[f"noise_{len(noises)}"]
        if not torch.is_tensor(nz) or nz.ndim != 4 or nz.shape[1] != 1 or nz.shape[0] not in (1, wplus.shape[0]) \
                or nz.shape[2] != nz.shape[3]:
            raise CheckpointError(path, f"noise map 'noise_{len(noises)}' has shape "
                                        f"{tuple(getattr(nz, 'shape', ()))}, expected (1 or {wplus.shape[0]}, 1, r, r)")
        if not torch.isfinite(nz.float()).all():
            raise CheckpointError(path, f"noise map 'noise_{len(noises)}' contains NaN or inf values")
        noises.append(nz.detach().float().cpu())
    if not noises:
        noises = None
    names = meta.get("names") if isinstance(meta.get("names"), list) else None
    if names is None or len(names) != wplus.shape[0]:
        names = [path.stem] if wplus.shape[0] == 1 else [f"{path.stem}_{i}" for i in range(wplus.shape[0])]
    names = [str(n) if n else f"{path.stem}_{i}" for i, n in enumerate(names)]
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    wpath = meta.get("weights_path") or meta.get("weights") or cfg.get("weights_path") or cfg.get("weights")
    return SavedLatents(wplus=wplus, noises=noises, names=names, weights_sha256=meta.get("weights_sha256"),
                        weights_path=str(wpath) if isinstance(wpath, (str, os.PathLike)) else None, path=path)


def save_latents(path: "str | os.PathLike[str]", wplus: torch.Tensor, *, noises: Sequence[torch.Tensor] | None = None,
                 **meta: Any) -> Path:
    """Write ``{"wplus": (N, n_latent, D), "noise_k": ...}`` to ``path`` (readable by :func:`load_latents`)
    and ``meta`` (JSON values: how the latents were made, ``weights_sha256``, ...) to ``<stem>.edit.json``.

    Both files are written atomically. Returns the tensor file's path.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise InputError(f"{path}: give the tensor file's path (.pt); the metadata is written beside it")
    w = as_wplus(wplus, "wplus").detach().float().cpu()
    w = (w if w.ndim == 3 else w[None]).contiguous()
    tensors: dict[str, torch.Tensor] = {"wplus": w}
    for k, nz in enumerate(noises or []):
        tensors[f"noise_{k}"] = nz.detach().float().cpu().contiguous()
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    with atomic_path(_edit_meta_path(path)) as tmp:
        tmp.write_text(json.dumps({"format": "facelib.edit", **meta}, indent=1, default=str))
    return path


def generator_for(latents: Sequence[SavedLatents], weights: "str | os.PathLike[str] | None" = None, *,
                  device: Any = None) -> tuple[torch.nn.Module, str]:
    """The generator that rendered ``latents``: ``weights`` if given, else the one they record.

    Looks, in order, at ``weights``; a generator path recorded with the latents; the small
    untrained smoke generator when the recorded SHA-256 is its fingerprint; and generator files
    under ``data/`` (:func:`facelib.data.locate`) whose SHA-256 matches the recorded one.

    Returns:
        (generator in eval mode, a description of where it came from).
    Raises:
        DependencyError: none found (the message says what was recorded and how to pass ``--weights``).
    """
    if weights:
        return load_generator(weights, device=device), f"generator {weights}"
    for lat in latents:
        if lat.weights_path and Path(lat.weights_path).is_file():
            return (load_generator(lat.weights_path, device=device),
                    f"generator {lat.weights_path} (recorded in {lat.path.name})")
    shas = [lat.weights_sha256 for lat in latents if lat.weights_sha256]
    if shas and shas[0].startswith("smoke-"):
        for seed in range(4):
            G = smoke_generator(seed, device)
            if G.weights_sha256 == shas[0]:
                log.warning("the latents were made with the small untrained smoke generator (seed %d); "
                            "images are not faces", seed)
                return G, f"untrained smoke generator (seed {seed})"
    if shas:
        try:
            for found in locate().generators:
                if file_sha256(found.path) == shas[0]:
                    return load_generator(found.path, device=device), f"generator {found.path} (SHA-256 match)"
        except (OSError, DependencyError) as e:  # a broken data folder must not hide the real message
            log.warning("searching data/ for the generator failed: %s", e)
    recorded = f"they record generator SHA-256 {shas[0][:16]}..." if shas else "they record no generator"
    raise DependencyError(f"{', '.join(str(l.path) for l in latents)}: which generator? {recorded}, and no matching "
                          "file was found under data/; pass --weights G.pt")
