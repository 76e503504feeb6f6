"""Swap pairs for notebook 05: :func:`swap_inputs` picks (source, target) pairs from the saved
projections (sources as their aligned photos when found), or random latents when there are none;
:func:`swap_folder` says where the swaps are saved (beside finished swaps of other settings).
"""
from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from .edit_inputs import find_projections, random_latents
from .errors import InputError
from .latents import SavedLatents
from .paths import IMAGE_EXTENSIONS
from .projection import load_targets
from .variants import BesideChoice, choose_beside, other_settings

if TYPE_CHECKING:
    from .swap import SwapResult

__all__ = ["SwapInputs", "swap_inputs", "swap_folder"]


@dataclass(frozen=True)
class SwapInputs:
    """Pairs for notebook 05 and where they came from (see :func:`swap_inputs`).

    Attributes:
        sources: (P, 3, H, W) float32 in [-1, 1], the identity donors (aligned photos when found,
            else the source projections' renderings, else renderings of random latents).
        targets: the targets' latents: ``wplus`` (P, n_latent, D), ``noises`` (or None), ``names``
            (a :class:`facelib.edits.SavedLatents`); pass it to :func:`face_swap` as ``target``.
        source_names / target_names: per pair.
        target_photos: per pair the target's aligned photo path, or None.
        notes: what was used (and what stood in for missing inputs).
        stand_ins: True when random latents replaced missing projections.
    """

    sources: torch.Tensor
    targets: Any
    source_names: list[str]
    target_names: list[str]
    target_photos: list[Path | None]
    notes: tuple[str, ...] = ()
    stand_ins: bool = False

    def __len__(self) -> int:
        return int(self.sources.shape[0])

    def file_names(self) -> list[str]:
        """``<source>_on_<target>`` per pair (the report's naming; "/" becomes "_")."""
        return [f"{s.replace('/', '_')}_on_{t.replace('/', '_')}" for s, t in zip(self.source_names, self.target_names)]


def _aligned_photo(aligned_dir: Path | None, name: str) -> Path | None:
    if aligned_dir is None:
        return None

    base = aligned_dir / name
    if not base.parent.is_dir():
        return None
    for ext in IMAGE_EXTENSIONS:  # any case of any image extension: 2.jpg, 2.JPEG, 2.png
        hit = sorted(p for p in base.parent.glob(f"{glob.escape(base.name)}.*")
                     if p.suffix.lower() == ext and p.is_file())
        if hit:
            return hit[0]
    return None


def swap_inputs(G: nn.Module, *, latents_dir: Any = "out/latents", aligned_dir: Any = "out/aligned",
                pairs: Sequence[Sequence[str]] | None = None, max_pairs: int = 4, seed: int = 0) -> SwapInputs:
    """(source, target) pairs for notebook 05, falling back to random latents.

    With two or more projections in ``latents_dir`` (:func:`facelib.edits.find_projections`;
    those of another generator are skipped): ``pairs`` names them (``[("AJoly/2", "LDCaprio/0")]``),
    else the first projection is the source and the next ones (other people first, by the
    folder name) are targets, up to ``max_pairs``, as in the report's table (one source on
    several targets). A source is its aligned photo (``aligned_dir/<name>.jpg``, resized to the
    generator) when there is one, else its projection's rendering. With fewer than two
    projections nothing is projected: targets are random W+ (truncation 0.7, ``seed``) and
    sources renderings of other random W+ (``seed + 1``).

    Raises:
        InputError: a named pair refers to a projection that does not exist.
    """

    notes: list[str] = []
    ldir = Path(latents_dir) if latents_dir else None
    adir = Path(aligned_dir) if aligned_dir else None
    projections = find_projections(ldir, G=G) if ldir is not None else {}
    if len(projections) >= 2:
        names = list(projections)
        if pairs:
            chosen = [(str(a), str(b)) for a, b in pairs]
            missing = sorted({n for p in chosen for n in p if n not in projections})
            if missing:
                raise InputError(f"pairs: no projection named {missing} in {ldir} (found: {names[:10]})")
        else:
            src = names[0]
            person = src.split("/")[0]
            others = [n for n in names[1:] if n.split("/")[0] != person] + [n for n in names[1:]
                                                                           if n.split("/")[0] == person]
            chosen = [(src, t) for t in others[:max(1, int(max_pairs))]]
        sources, photos, n_photo = [], [], 0
        for s, t in chosen:
            photo = _aligned_photo(adir, s)
            n_photo += photo is not None
            sources.append(load_targets(photo, G.resolution)[0] if photo is not None else projections[s].images[:1])
            photos.append(_aligned_photo(adir, t))
        notes.append(f"pairs: {chosen} from {ldir}; sources: {n_photo} aligned photo(s) from {adir}, "
                     f"{len(chosen) - n_photo} projection rendering(s)")
        tp = [projections[t] for _, t in chosen]
        noises = None
        if all(p.noises for p in tp):
            noises = [torch.cat([p.noises[k] for p in tp]) for k in range(len(tp[0].noises))]
        targets = SavedLatents(wplus=torch.cat([p.wplus for p in tp]), noises=noises, names=[t for _, t in chosen],
                               weights_sha256=tp[0].weights_sha256, weights_path=None, path=ldir)
        return SwapInputs(sources=torch.cat(sources).float(), targets=targets, source_names=[s for s, _ in chosen],
                          target_names=[t for _, t in chosen], target_photos=photos, notes=tuple(notes))
    n = max(1, min(int(max_pairs), 2))
    notes.append(f"fewer than 2 projections in {ldir} fit this generator ({len(projections)} found): nothing is "
                 f"projected; {n} random target latent(s) (seed {seed}) and random source renderings "
                 f"(seed {seed + 1}) stand in (run notebooks 01-02 first for real faces)")
    w_t = random_latents(G, n, seed=seed)
    with torch.no_grad():
        dev = next(G.parameters()).device
        sources = G.synthesis(random_latents(G, n, seed=seed + 1).to(dev)).float().clamp(-1, 1).cpu()
    targets = SavedLatents(wplus=w_t, noises=None, names=[f"random_{i}" for i in range(n)], weights_sha256=None,
                           weights_path=None, path=Path("."))
    return SwapInputs(sources=sources, targets=targets, source_names=[f"random_src_{i}" for i in range(n)],
                      target_names=list(targets.names), target_photos=[None] * n, notes=tuple(notes), stand_ins=True)


def swap_folder(result: "SwapResult", folder: Any, names: Sequence[str], *, overwrite: bool = False) -> BesideChoice:
    """Where this run's swaps are saved (``<folder>/<name>.jpg`` + ``.pt`` + ``.json`` per pair).

    ``folder`` itself, unless it holds a finished swap of one of ``names`` (its ``<name>.json``)
    made with another :class:`~facelib.swap.SwapConfig` or generator than ``result``: then,
    unless ``overwrite``, those are kept byte-identical and this run goes beside them into
    ``<folder>@<tag>`` (:func:`facelib.variants.choose_beside`; the same settings always get the
    same folder, where a rerun replaces its own swaps as in ``folder``).

    Args:
        result: the swap (its ``config`` and ``weights_sha256`` are the settings compared).
        folder: the usual folder (notebook 05: ``out/face_swap``).
        names: the file name of each pair (:meth:`SwapInputs.file_names`).
        overwrite: replace swaps made with other settings in ``folder``.
    Returns:
        A :class:`facelib.variants.BesideChoice`: ``folder`` to save into, ``note`` to show.
    """
    settings = {"config": result.config.to_dict(), "weights_sha256": result.weights_sha256}
    others = []
    for i, n in enumerate([] if overwrite else names):
        sidecar = Path(folder) / f"{n}.json"
        why = other_settings(sidecar, settings, fmt="facelib.swap")
        if why is None and i < len(result):
            why = _other_target(sidecar.with_suffix(".pt"), result.target_wplus[i])
        if why:
            others.append(why)
    # the folder's tag also names the targets, so swaps of other projections get their own folder
    targets = hashlib.sha256(result.target_wplus.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
    return choose_beside(folder, {**settings, "targets": targets[:16]}, others,
                         replace_hint="OVERWRITE = True replaces them")


def _other_target(tensors: Path, target_wplus: torch.Tensor) -> str | None:
    """Why the finished swap in ``tensors`` (with its sidecar, same settings) is of another target
    latent than ``target_wplus`` (n_latent, D) (e.g. a projection made again with other settings),
    or None when it is the same one or the file cannot be read (then it is redone as usual)."""
    try:
        saved = torch.load(tensors, map_location="cpu", weights_only=True)["target_wplus"]
        meta = json.loads(tensors.with_suffix(".json").read_text())
    except Exception:  # noqa: BLE001 - no finished swap to keep: it is made again
        return None
    if meta.get("interrupted") or meta.get("format") != "facelib.swap":
        return None
    first = saved.float().reshape(-1, *saved.shape[-2:])[0]  # the saved pair's (n_latent, D)
    w = target_wplus.detach().float().cpu().reshape(-1, *target_wplus.shape[-2:])[0]
    if first.shape == w.shape and torch.allclose(first, w, atol=1e-6):
        return None
    return "made from another projection of the target"
