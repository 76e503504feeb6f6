"""Projection of folders of aligned photos: :func:`project_folder` and its result.

``project_folder(src, dst, G)`` runs :func:`facelib.projection.project` over every aligned image
under ``src`` in memory-sized batches and writes one ``.png`` / ``.pt`` / ``.json`` set per image
(:func:`projection_paths`), skipping finished sets, keeping results made with other settings and
going on past bad images. With ``beside=True`` a run whose settings differ from the finished results
in ``dst`` writes into ``dst@<tag>`` instead (:func:`facelib.variants.choose_beside`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ._io import check_output_folder, remove_stale_parts
from ._optim import generator_id
from .align import load_image
from .align_batch import scan_images
from .distributed import announce_interrupt, gather, interrupted, item_seed, shard, world
from .errors import BatchInterrupted, CheckpointError, InputError, MemoryLimitError, OptimisationError
from .folder_result import FolderResult
from .grids import save_image, stamp, to_pil, to_tensor
from .memory import plan_batch, split_after_out_of_memory
from .paths import IMAGE_EXTENSIONS
from .projection import load_projection, project, ProjectConfig, Projection, settle_config, sha256_tensor
from .stamps import SMOKE_STAMP
from .variants import choose_beside

__all__ = ["project_folder", "projection_paths", "ProjectFolderResult"]

log = logging.getLogger(__name__)


@dataclass
class ProjectFolderResult(FolderResult):
    """Outcome of :func:`project_folder` (the lists of :class:`facelib.folder_result.FolderResult`,
    items being images), and:

    Attributes:
        dst: the folder this run wrote into: ``dst``, or with ``beside`` its sibling for these
            settings (:func:`facelib.variants.beside_folder`).
    """

    DONE: ClassVar[str] = "projected"
    dst: Path | None = None


def projection_paths(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]",
                     image: "str | os.PathLike[str]") -> tuple[Path, Path, Path]:
    """(``.pt``, ``.json``, ``.png``) output paths of ``image`` (under ``src``) in ``dst``,
    keeping sub-folders: ``src/<person>/<n>.jpg`` -> ``dst/<person>/<n>.pt``."""
    src, image = Path(src), Path(image)
    rel = image.relative_to(src) if src.is_dir() else Path(image.name)
    base = Path(dst) / rel.parent / rel.stem
    return base.with_suffix(".pt"), base.with_suffix(".json"), base.with_suffix(".png")


def _matches(meta_path: Path, cfg: ProjectConfig, weights: str, target_sha: str | None) -> tuple[str, str | None]:
    """("same", None) when the saved result was made from this image with these settings and
    generator; ("other", why) when it was made with other settings, weights or from another image
    (a finished result: kept unless overwrite); ("redo", why) when it is unfinished or unreadable.
    ``target_sha`` None: the image is not compared."""
    try:
        meta = json.loads(meta_path.read_text())
        saved = ProjectConfig.from_dict(meta.get("config", {}))
    except (OSError, ValueError, InputError) as e:
        return "redo", f"unreadable ({e})"
    if meta.get("interrupted"):
        return "redo", "interrupted"
    # the seed is per image; compiling changes the speed, not the result
    if dataclasses.replace(saved, seed=0, compile=False) != dataclasses.replace(cfg, seed=0, compile=False):
        diff = [f.name for f in dataclasses.fields(ProjectConfig) if f.name not in ("seed", "compile")
                and getattr(saved, f.name) != getattr(cfg, f.name)]
        shown = ", ".join(f"{k} {getattr(saved, k)!r} (now {getattr(cfg, k)!r})" for k in diff[:3])
        return "other", f"made with other settings: {shown}"
    if meta.get("weights_sha256") != weights:
        return "other", f"made with another generator ({str(meta.get('weights_sha256'))[:12]})"
    if target_sha is not None and (meta.get("target_sha256") or [None])[0] != target_sha:
        return "other", "made from another version of this image"
    return "same", None


def _other_settings(src: Path, dst: Path, images: list[Path], cfg: ProjectConfig, weights: str,
                    resolution: int) -> tuple[list[str], dict[Path, str]]:
    """Why ``dst`` holds a finished result of other settings, another generator or another version
    of the image, for each of ``images`` it does (the image is read only when the settings match),
    and the SHA-256 of the images read (so the run does not read them again to skip them)."""
    others: list[str] = []
    shas: dict[Path, str] = {}
    for path in images:
        pt, meta, _ = projection_paths(src, dst, path)
        if not (pt.is_file() and meta.is_file()):
            continue
        state, why = _matches(meta, cfg, weights, None)
        if state == "same":
            try:
                target = to_tensor(load_image(path), resolution)
            except InputError:
                continue  # reported by the run itself
            shas[path] = sha256_tensor(target[0])
            state, why = _matches(meta, cfg, weights, shas[path])
        if state == "other":
            others.append(f"{path.name}: {why}" if why and why.startswith("made from") else str(why))
    return others, shas


def _in_beside_folder(path: Path, dst: Path) -> bool:
    """True when ``path`` lies in a folder beside ``dst`` (``<dst>@<tag>``)."""
    parent, prefix = dst.resolve().parent, dst.name + "@"
    return any(p.parent == parent and p.name.startswith(prefix) for p in path.resolve().parents)


def _beside_settings(cfg: ProjectConfig, weights: str, src: Path) -> dict[str, Any]:
    """What names the sibling folder of a run: the settings that change the result (not the
    per-image seed, not compiling), the generator and the input folder's name."""
    return {"config": dataclasses.replace(cfg, seed=0, compile=False).to_dict(), "generator": weights,
            "source": src.name}


def _save_one(one: "Projection", pt: Path, png: Path, smoke: bool, extra: Mapping[str, Any] | None = None) -> None:
    """Write one image's result as a unit: the rendering first, then the tensors, the JSON last
    (its presence marks the set complete)."""
    image = to_pil(one.images[0])
    if smoke:

        image = stamp(image, SMOKE_STAMP)
    save_image(image, png)
    one.save(pt, extra=extra)


def project_folder(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", G: nn.Module, *,
                   config: ProjectConfig | None = None, batch_size: int | None = None, overwrite: bool = False,
                   max_images: int | None = None, progress: bool = True, beside: bool = False,
                   cache_dir: "str | os.PathLike[str] | None" = None,
                   vgg_path: "str | os.PathLike[str] | None" = None, **options: Any) -> ProjectFolderResult:
    """Project every aligned image under ``src`` (recursively) in batches, writing per image
    ``dst/<sub>/<stem>.png`` (the rendering), ``.pt`` and ``.json`` (:meth:`Projection.save`),
    in that order: the JSON, written last, marks a complete set.

    An image whose set is complete and was made from the same image with the same settings and
    generator is skipped. A complete set made with other settings, another generator or from
    another version of the image is a finished result: it is kept byte-identical and listed in
    ``kept`` unless ``overwrite``. With ``beside`` (and not ``overwrite``), when ``dst`` holds such
    a result for any of this run's images, the whole run writes beside them instead, into
    ``dst@<tag>`` (:func:`facelib.variants.beside_folder`; the tag is a hash of the settings, the
    generator and the input folder's name, so a rerun with them finds its results there), says so
    in ``notes`` and returns that folder as ``dst``; ``dst`` itself stays byte-identical.
    Unfinished sets (interrupted runs, a missing rendering) are
    redone. Temporary files a killed run left in ``dst`` are removed first. Unreadable images,
    unusable folder entries (dangling links, loops, folders named like images) and batches
    whose optimisation fails are reported in ``failed`` and the rest go on. Renderings of the
    untrained smoke generator are stamped as such.

    Memory: without ``batch_size`` the batch (up to 4) is chosen from the device's free memory
    (:func:`facelib.memory.plan_batch`; the choice is in ``notes``); a given one that does not
    fit is reduced; when even one image does not fit, :class:`RangeError` says the estimate
    before anything large is allocated. A batch that still runs out of memory is split in halves.

    Ctrl-C raises :class:`facelib.errors.BatchInterrupted` whose ``result`` lists what was
    finished, skipped and not reached.
    Each image's seed is ``seed`` plus a hash of its path relative to ``src``
    (:func:`facelib.distributed.item_seed`), so its result does not depend on the batch or
    process it ran in; the saved ``config.seed`` is that seed (it reproduces the file alone).

    Under ``torchrun`` every rank takes its share of the sorted image list
    (:func:`facelib.distributed.shard`; call :func:`facelib.distributed.init` first to join the
    process group), projects it on its own device (the generator's), writes its files itself
    (their JSON records ``rank`` and ``world_size``), and every rank returns the combined
    result of all ranks. A rerun skips images any rank finished.

    Args:
        src: folder of aligned images (or one image).
        dst: output folder.
        G: the generator.
        config / options: projection settings, as for :func:`project`: a :class:`ProjectConfig`
            or keyword options, not both.
        batch_size: images optimised together (None = from free memory).
        overwrite: replace results made with other settings.
        beside: write beside results made with other settings rather than keeping them and
            skipping their images (what the notebooks do).
        max_images: only the first this many images (sorted by path).
    Raises:
        InputError: ``src`` is neither a folder nor an image, ``dst`` cannot be written, or
            ``batch_size`` < 1.
        RangeError: one image does not fit in the device's free memory.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise InputError(f"batch_size: expected >= 1, got {batch_size}")
    cfg, _, _ = settle_config(config, options, "project_folder")
    src, dst = Path(src), Path(dst)
    result = ProjectFolderResult(dst=dst)
    if src.is_dir():
        images, passed = scan_images(src, exclude=dst)  # an output folder inside src holds renderings, not inputs
        images = [p for p in images if not _in_beside_folder(p, dst)]  # nor do the folders beside it
        for p, why in passed:
            result.failed[str(p)] = why
            log.warning("skipping %s: %s", p, why)
    elif src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
        images = [src]
    else:
        raise InputError(f"{src}: not a folder of images or an image file")
    check_output_folder(dst, "dst")
    for stale in remove_stale_parts(dst):
        log.info("removed %s (left by an interrupted run)", stale)
    if max_images is not None:
        images = images[:max_images]
    info = world()
    images = shard(sorted(images), info)  # this rank's share; the whole list in a single process
    weights = generator_id(G)
    smoke = str(weights).startswith("smoke-")
    shas: dict[Path, str] = {}
    if beside and not overwrite:
        others, shas = _other_settings(src, dst, images, cfg, weights, G.resolution)
        if info.distributed:  # every rank writes into the same folder
            others = [why for part in gather(others, final=False) for why in part]
        choice = choose_beside(dst, _beside_settings(cfg, weights, src), others,
                               replace_hint="overwrite=True replaces them")
        if choice.beside:
            dst = result.dst = check_output_folder(choice.folder, "dst")
            for stale in remove_stale_parts(dst):
                log.info("removed %s (left by an interrupted run)", stale)
            result.notes.append(str(choice.note))
            log.warning("%s", choice.note)
    todo: list[tuple[Path, torch.Tensor]] = []
    for path in images:
        pt, meta, png = projection_paths(src, dst, path)
        if (path in shas and pt.is_file() and meta.is_file() and png.is_file()
                and _matches(meta, cfg, weights, shas[path])[0] == "same"):
            result.skipped.append(path)  # done, and the image was read while choosing the folder
            continue
        try:
            target = to_tensor(load_image(path), G.resolution)
        except InputError as e:
            result.failed[str(path)] = str(e)
            log.warning("skipping %s: %s", path, e)
            continue
        if pt.is_file() and meta.is_file():
            state, why = _matches(meta, cfg, weights, sha256_tensor(target[0]))
            if state == "same" and png.is_file():
                result.skipped.append(path)
                continue
            if state == "same":  # the set lost its rendering: remake it from the saved tensors
                try:
                    _save_one(load_projection(pt), pt, png, smoke)
                    result.written.append(pt)
                    continue
                except (CheckpointError, OSError) as e:
                    why = f"incomplete ({e})"
            elif state == "other" and not overwrite:
                result.kept[str(path)] = why
                continue
            log.info("%s: redoing (%s)", path, why)
        todo.append((path, target))
    if todo:
        plan = plan_batch(G, G.device, requested=batch_size, n_images=len(todo), lpips=cfg.lpips is not None,
                          lpips_size=cfg.lpips_size)
        if plan.note:
            result.notes.append(plan.note)
            log.info("%s", plan.note)
        size = plan.batch
    else:
        size = 1
    queue = [todo[i:i + size] for i in range(0, len(todo), size)]
    where = f"rank {info.rank}/{info.world_size} " if info.distributed else ""
    done = 0
    try:
        while queue:
            if interrupted():  # another rank of the launch was interrupted: stop here too
                raise KeyboardInterrupt
            batch = queue.pop(0)
            paths = [p for p, _ in batch]
            seeds = [item_seed(projection_paths(src, "", p)[0].with_suffix("").as_posix(), cfg.seed) for p in paths]
            try:
                proj = project(G, torch.cat([t for _, t in batch]), config=config, progress=progress,
                               cache_dir=cache_dir, vgg_path=vgg_path, seeds=seeds,
                               desc=f"{where}{done + 1}-{done + len(batch)} of {len(todo)}", **options)
            except OptimisationError as e:
                for p in paths:
                    result.failed[str(p)] = str(e)
                log.warning("images %s failed: %s", [p.name for p in paths], e)
                done += len(batch)
                continue
            except (RuntimeError, MemoryError, MemoryLimitError) as e:
                split = split_after_out_of_memory(e, batch, G.device, "images")
                if split is None:
                    raise
                halves, message = split
                if not halves:
                    for p in paths:
                        result.failed[str(p)] = message
                    done += 1
                    continue
                result.notes.append(message)
                log.warning("%s", message)
                queue[:0] = halves
                continue
            if proj.interrupted:
                raise KeyboardInterrupt
            for j, path in enumerate(paths):
                one = dataclasses.replace(proj.select(j), names=[path.stem])
                pt, _, png = projection_paths(src, dst, path)
                _save_one(one, pt, png, smoke, extra={"rank": info.rank, "world_size": info.world_size})
                result.written.append(pt)
            done += len(batch)
    except KeyboardInterrupt:
        announce_interrupt()  # under torchrun: the other ranks stop too (no-op when one of them stopped us)
        result.interrupted = True
        finished = {str(p) for p in result.written}
        result.not_reached = [p for p, _ in todo
                              if str(projection_paths(src, dst, p)[0]) not in finished
                              and str(p) not in result.failed]
        raise BatchInterrupted(result) from None
    if info.distributed:
        try:
            parts = gather(result)
        except KeyboardInterrupt:  # another rank was interrupted while this one waited for it
            result.interrupted = True
            raise BatchInterrupted(result) from None
        result = ProjectFolderResult(written=[p for r in parts for p in r.written],
                                     skipped=[p for r in parts for p in r.skipped],
                                     failed={k: v for r in parts for k, v in r.failed.items()},
                                     kept={k: v for r in parts for k, v in r.kept.items()},
                                     notes=list(dict.fromkeys(n for r in parts for n in r.notes)), dst=dst)
    return result
