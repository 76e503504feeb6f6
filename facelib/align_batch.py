"""Aligning folders of photos, and the geometry each aligned crop keeps for pasting edits back.

:func:`align_folder` aligns every photo under a folder (one worker process per CPU core,
results in input order, resumable, atomic writes) into the person layout
``<dst>/<person>/<n>.png`` (or mirrors the source tree), and writes beside each crop a
``<stem>.align.json`` sidecar (:func:`save_alignment`) from which :func:`load_alignment`
restores the :class:`~facelib.align.AlignedFace` geometry. :func:`scan_images` /
:func:`list_images` find the photos; :func:`person_name` names whose they are.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ._io import atomic_path, check_output_folder, remove_stale_parts
from .align import WARPS, AlignedFace, align_faces, check_size, load_image
from .errors import BatchInterrupted, DependencyError, FacelibError, InputError
from .paths import IMAGE_EXTENSIONS
from .progress import progress_bar as tqdm
from .variants import BesideChoice, choose_beside, other_settings

__all__ = ["scan_images", "list_images", "person_name", "write_sample_photos", "MAX_OUTPUT_SIZE", "ALIGN_LAYOUTS",
           "AlignFolderResult", "align_folder", "ALIGNMENT_SUFFIX", "alignment_path", "save_alignment",
           "load_alignment", "alignment_folder"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------

def scan_images(folder: "str | os.PathLike[str]", *, recursive: bool = True,
                exclude: "str | os.PathLike[str] | None" = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder`` (by suffix, sorted; hidden files and folders skipped) and the
    entries passed over with the reason: dangling links, symlink loops, folders named like images,
    unreadable folders. Linked folders are followed once each.

    Returns:
        (images, passed_over) where passed_over holds ``(path, reason)`` pairs.
    Raises:
        InputError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    passed: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:
        passed.append((Path(err.filename or root), f"folder cannot be read ({err.strerror or err})"))

    for dirpath, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        here = Path(dirpath)
        real = os.path.realpath(here)
        if real in seen:  # reached again through a link: a loop or a second path to the same folder
            passed.append((here, "symlink loop or repeated linked folder (followed once)"))
            dirs[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirs):
            p = here / d
            if d.startswith(".") or (skip is not None and (p.resolve() == skip or skip in p.resolve().parents)):
                continue
            if d.lower().endswith(IMAGE_EXTENSIONS):
                passed.append((p, "a folder named like an image"))
            if recursive:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            p = here / name
            if not p.exists():
                passed.append((p, "dangling link (its target does not exist)"))
            elif not p.is_file():
                passed.append((p, "not a regular file"))
            elif not os.access(p, os.R_OK):
                passed.append((p, "file cannot be read (permission denied)"))
            else:
                found.append(p)
    return sorted(found), passed


def list_images(folder: "str | os.PathLike[str]", *, recursive: bool = True,
                exclude: "str | os.PathLike[str] | None" = None) -> list[Path]:
    """Image files under ``folder`` (by suffix, sorted; hidden files and folders skipped).

    Entries passed over (see :func:`scan_images`) are logged as warnings.
    """
    found, passed = scan_images(folder, recursive=recursive, exclude=exclude)
    for p, why in passed:
        log.warning("skipping %s: %s", p, why)
    return found


def person_name(path: "str | os.PathLike[str]", root: "str | os.PathLike[str]") -> str:
    """Group name of a photo: its first sub-folder under ``root``, else the file stem."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def write_sample_photos(folder: "str | os.PathLike[str]") -> list[Path]:
    """Write scikit-image's bundled face photo(s) as PNG into ``folder``; return their paths.

    Used by the notebooks when no photo folder is given. scikit-image bundles one face photo,
    ``astronaut.png`` (Eileen Collins, NASA, public domain); a mirrored copy and a copy rolled by
    20 degrees (``astronaut_rot20.png``, to show the levelling) are written beside it. Existing
    files are kept.
    """
    try:
        from skimage import data
    except ImportError as e:
        raise DependencyError("sample photos need scikit-image: pip install scikit-image") from e
    folder = Path(folder)
    img = Image.fromarray(data.astronaut())
    photos = {"astronaut.png": img, "astronaut_mirrored.png": ImageOps.mirror(img),
              "astronaut_rot20.png": img.rotate(20, Image.Resampling.BICUBIC, expand=True,
                                                fillcolor=(128, 128, 128))}
    paths = []
    for name, im in photos.items():
        path = folder / name
        if not path.exists():
            with atomic_path(path) as tmp:
                im.save(tmp, format="PNG")
        paths.append(path)
    return paths


#: Largest ``output_size`` accepted (FFHQ's crops are 1024 px; its transform works at 4096).
MAX_OUTPUT_SIZE = 4096
#: Output layouts of :func:`align_folder`.
ALIGN_LAYOUTS = ("person", "mirror")


@dataclass(frozen=True)
class AlignFolderResult:
    """What :func:`align_folder` did.

    Attributes:
        written: output files written in this run.
        skipped: ``(input, reason)`` for inputs left alone (outputs already present).
        failed: ``(input, reason)`` for inputs that could not be aligned (unreadable, no face, ...)
            and entries of the folder that are not usable photos (dangling links, loops, ...).
        kept: ``(output, reason)`` for outputs made with other settings, left as they were.
        not_reached: inputs not started because the run was interrupted.
        interrupted: True when Ctrl-C ended the run.
    """

    written: tuple[Path, ...] = ()
    skipped: tuple[tuple[Path, str], ...] = ()
    failed: tuple[tuple[Path, str], ...] = ()
    kept: tuple[tuple[Path, str], ...] = ()
    not_reached: tuple[Path, ...] = ()
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when no input failed and something was done or was already done."""
        return not self.failed and not self.nothing_done

    @property
    def nothing_done(self) -> bool:
        """True when nothing was written or already done and results of other settings were kept."""
        return bool(self.kept) and not self.written and not self.skipped

    def summary(self) -> str:
        """Multi-line human-readable report."""
        head = "INTERRUPTED: " if self.interrupted else ""
        lines = [f"{head}written {len(self.written)} file(s), skipped {len(self.skipped)}, "
                 f"failed {len(self.failed)}" + (f", not reached {len(self.not_reached)}" if self.interrupted else "")]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        lines += [f"  failed  {p}: {why}" for p, why in self.failed]
        lines += [f"  kept    {p}: {why}" for p, why in self.kept]
        if self.kept:
            lines.append(f"kept {len(self.kept)} result(s) made with other settings; rerun with --overwrite "
                         "(overwrite=True) to replace them")
        lines += [f"  not reached {p}" for p in self.not_reached]
        return "\n".join(lines)


def _aligned_size(path: Path) -> int | None:
    try:
        with Image.open(path) as im:
            return im.size[0] if im.size[0] == im.size[1] else -1
    except (OSError, SyntaxError, ValueError):
        return None


def _align_job(job: tuple[Path, list[Path], bool, dict, dict]) -> tuple[list[Path], str | None, str | None]:
    """Align one photo and write its file(s) and geometry (in a worker process or in this one).

    ``job`` is (photo, output files for faces 0, 1, ... (with ``all_faces`` a name pattern
    ``<stem>_{k}<ext>``), all_faces, align_faces options, PIL save options). Returns (written
    files, failure message or None, missing-dependency message or None).
    """
    path, targets, all_faces, options, fmt = job
    try:
        faces = align_faces(path, max_faces=None if all_faces else 1, **options)
        if all_faces:
            folder, name = targets[0].parent, targets[0].name  # "<stem>_{k}<ext>"
            targets = [folder / name.replace("{k}", str(k)) for k in range(len(faces))]
        written = []
        for face, target in reversed(list(zip(faces, targets))):  # _0 last: it marks a finished photo
            geometry = save_alignment(face, target, path)  # geometry first: the image marks a finished face
            try:
                with atomic_path(target) as tmp:
                    face.image.save(tmp, **fmt)
            except BaseException:
                Path(geometry).unlink(missing_ok=True)  # no geometry without its image
                raise
            written.append(target)
        return written, None, None
    except DependencyError as e:
        return [], None, str(e)  # a missing model affects every file: the caller stops
    except FacelibError as e:
        return [], str(e), None
    except Exception as e:  # noqa: BLE001 - keep going past anything one file can cause
        return [], f"{type(e).__name__}: {e}", None


def _default_workers() -> int:
    """One worker per CPU core available to this process, divided among torchrun's local ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_ranks))


def align_folder(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", *,
                 output_size: int = 1024, all_faces: bool = False, detector: str = "hog",
                 predictor_path: "str | os.PathLike[str] | None" = None,
                 overwrite: bool = False, progress: bool = True, layout: str = "person",
                 workers: int | None = None, warp: str = "fast") -> AlignFolderResult:
    """Align every photo under ``src`` into ``dst``, continuing past bad files.

    Layouts: ``"person"`` (default; what the notebooks and the report read) writes the largest
    face of the ``n``-th photo (sorted) of each person to ``<dst>/<person>/<n>.jpg`` (and its
    geometry to ``<n>.align.json``, :func:`save_alignment`, for pasting edits back), where the
    person is the photo's first sub-folder under ``src`` (else its file stem);
    ``"mirror"`` mirrors the input tree as ``<dst>/<sub>/<stem>.png``. With ``all_faces`` each
    face ``k`` (0 = largest) goes to ``<n>_<k>.jpg`` / ``<stem>_<k>.png``, written from the last
    to ``_0``, so ``_0`` exists only once all of them do. Each file is written atomically;
    temporary files a killed run left in ``dst`` are removed first.

    An input whose output exists at ``output_size`` is skipped. An output of another size (made
    with other settings) is kept as it is and listed in ``kept`` unless ``overwrite``.
    Two inputs with the same output name (``a.jpg``, ``a.png`` in mirror layout): the second fails.
    Ctrl-C raises :class:`facelib.errors.BatchInterrupted` whose ``result`` lists what was
    finished and not reached (under ``torchrun``, Ctrl-C on any rank does so on every rank:
    :mod:`facelib.distributed`).

    Photos are aligned by ``workers`` processes (the standard library's process pool); the
    result lists them in input order whatever finishes first. Under ``torchrun`` each rank
    takes its share of the sorted photo list (:func:`facelib.distributed.shard`) and every
    rank returns the combined result (call :func:`facelib.distributed.init` first).

    Args:
        src: folder searched recursively for :data:`IMAGE_EXTENSIONS` (``dst`` inside it is ignored),
            or a single photo.
        dst: output folder (created).
        output_size: side of the aligned images, 16 .. :data:`MAX_OUTPUT_SIZE`.
        all_faces: write every face instead of only the largest.
        detector, predictor_path, warp: see :func:`align_faces`.
        overwrite: redo inputs whose outputs exist, whatever settings made them.
        progress: show a tqdm progress bar.
        layout: ``"person"`` or ``"mirror"``.
        workers: processes; None = one per CPU core (shared among torchrun's ranks on a
            machine) but no more than one per 4 photos to align (a worker takes seconds to
            start), 1 = in this process.
    Returns:
        :class:`AlignFolderResult`.
    Raises:
        InputError: bad ``src``, ``dst``, ``output_size`` or ``layout``.
    """
    # torch (through facelib.distributed) only here: the worker processes import this module without it
    from .distributed import announce_interrupt, gather, interrupted, shard, world

    output_size = check_size("output_size", output_size)
    if not 16 <= output_size <= MAX_OUTPUT_SIZE:
        raise InputError(f"output_size: expected 16 .. {MAX_OUTPUT_SIZE} px, got {output_size}")
    if layout not in ALIGN_LAYOUTS:
        raise InputError(f"layout: expected one of {ALIGN_LAYOUTS}, got {layout!r}")
    if workers is not None:
        workers = check_size("workers", workers)
    if warp not in WARPS:
        raise InputError(f"warp: expected one of {WARPS}, got {warp!r}")
    src, dst = Path(src), Path(dst)
    failed: list[tuple[Path, str]] = []
    if src.is_file():
        root, inputs = src.parent, [src]
    elif src.is_dir():
        root = src
        inputs, passed = scan_images(src, exclude=dst)
        failed += passed
    else:
        raise InputError(f"{src}: no such file or folder")
    check_output_folder(dst, "dst")
    for stale in remove_stale_parts(dst):
        log.info("removed %s (left by an interrupted run)", stale)
    ext = ".jpg" if layout == "person" else ".png"
    # PNG at zlib level 1: ~4x faster to write than the default 6 for ~13 % more bytes (still lossless)
    fmt = {"format": "JPEG", "quality": 95} if layout == "person" else {"format": "PNG", "compress_level": 1}
    counts: dict[str, int] = {}
    written: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    kept: list[tuple[Path, str]] = []
    claimed: dict[Path, Path] = {}
    # Plan over the whole sorted list (names and clashes do not depend on the rank or on which
    # photos align): a person's n-th photo is <n>, whether or not an earlier one aligns.
    info = world()
    mine = set(shard(sorted(inputs), info))
    options = {"output_size": output_size, "detector": detector, "predictor_path": predictor_path, "warp": warp}
    jobs = []
    for path in inputs:
        if layout == "person":
            person = person_name(path, root) if src.is_dir() else path.stem
            out_dir, stem = dst / person, str(counts.get(person, 0))
            counts[person] = counts.get(person, 0) + 1
        else:
            out_dir, stem = dst / path.relative_to(root).parent, path.stem
        key = out_dir / stem
        clash = claimed.get(key)
        claimed.setdefault(key, path)
        if path not in mine:
            continue
        if clash is not None:
            failed.append((path, f"output name clashes with {clash.name}"))
            continue
        done = out_dir / (f"{stem}_0{ext}" if all_faces else f"{stem}{ext}")
        if done.exists() and not overwrite:
            have = _aligned_size(done)
            if have == output_size:
                skipped.append((path, f"already aligned ({done.name} exists)"))
            else:
                what = f"{have} px" if have and have > 0 else "not a square image"
                kept.append((done, f"made with other settings ({what}; this run: {output_size} px)"))
            continue
        targets = [out_dir / f"{stem}_{{k}}{ext}"] if all_faces else [done]
        jobs.append((path, targets, all_faces, options, fmt))
    # a worker takes seconds to start (imports, dlib models): by default one per 4 photos, at most one per core
    n_workers = max(1, min(workers, len(jobs)) if workers else min(_default_workers(), len(jobs) // 4))
    finished = 0
    try:
        with contextlib.ExitStack() as stack:
            if n_workers > 1:
                # spawn: workers start clean (no inherited threads or torch state); dlib models load once per worker
                pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                    n_workers, mp_context=multiprocessing.get_context("spawn")))
                # leaving early (Ctrl-C): drop the queued photos instead of waiting for them
                stack.callback(pool.shutdown, wait=False, cancel_futures=True)
                outcomes = pool.map(_align_job, jobs)  # results in input order
            else:
                outcomes = map(_align_job, jobs)
            bar = stack.enter_context(tqdm(total=len(jobs), desc="align", unit="img", disable=not progress))
            for job, (files, failure, missing) in zip(jobs, outcomes):
                if missing is not None:
                    raise DependencyError(missing)
                written += files
                if failure is not None:
                    failed.append((job[0], failure))
                    log.warning("skipping %s: %s", job[0], failure)
                finished += 1
                bar.update(1)
                if interrupted():  # another rank of the launch was interrupted: stop here too
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        announce_interrupt()  # under torchrun: the other ranks stop too (no-op when one of them stopped us)
        raise BatchInterrupted(AlignFolderResult(tuple(written), tuple(skipped), tuple(failed), tuple(kept),
                                                 tuple(j[0] for j in jobs[finished:]), True)) from None
    if info.distributed:
        try:
            parts = gather((written, skipped, failed, kept))
        except KeyboardInterrupt:  # another rank was interrupted while this one waited for it
            raise BatchInterrupted(AlignFolderResult(tuple(written), tuple(skipped), tuple(failed), tuple(kept),
                                                     (), True)) from None
        written = [x for part in parts for x in part[0]]
        skipped = [x for part in parts for x in part[1]]
        failed = [x for part in parts for x in part[2]]
        kept = [x for part in parts for x in part[3]]
    result = AlignFolderResult(tuple(written), tuple(skipped), tuple(failed), tuple(kept))
    log.debug("%s", result.summary())
    return result


# ----------------------------------------------------------------------------------------
# Geometry sidecars (pasting edits back into the photo)
# ----------------------------------------------------------------------------------------

ALIGNMENT_SUFFIX = ".align.json"


def alignment_path(aligned_image: "str | os.PathLike[str]") -> Path:
    """The geometry sidecar of an aligned image: ``<dir>/<stem>.align.json`` (the sidecar itself passes through)."""
    p = Path(aligned_image)
    if p.name.endswith(ALIGNMENT_SUFFIX):
        return p
    return p.with_name(p.stem + ALIGNMENT_SUFFIX)


def save_alignment(face: AlignedFace, aligned_image: "str | os.PathLike[str]",
                   photo: "str | os.PathLike[str] | None" = None) -> Path:
    """Write ``face``'s geometry (:meth:`AlignedFace.to_dict`) beside its aligned image, atomically.

    Args:
        face: the aligned face.
        aligned_image: where its image is (or will be) saved; the sidecar is :func:`alignment_path` of it.
        photo: the source photo, recorded relative to the sidecar's folder and absolute, so
            :func:`load_alignment` finds it after the folders move together.
    Returns:
        The sidecar's path.
    """
    out = alignment_path(aligned_image)
    meta = {"format": "facelib.alignment", "version": 1, "image": Path(aligned_image).name, **face.to_dict()}
    if photo is not None:
        photo = Path(photo)
        meta["photo"] = os.path.relpath(photo.resolve(), out.parent.resolve())
        meta["photo_abs"] = str(photo.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return out


def load_alignment(path: "str | os.PathLike[str]") -> AlignedFace:
    """Read an aligned image's geometry sidecar back into an :class:`AlignedFace`.

    Args:
        path: the aligned image or its ``.align.json``.
    Returns:
        The face, its ``image`` read from the aligned file and ``source`` the photo's path
        when that file exists (else the recorded name).
    Raises:
        InputError: no sidecar (align the photo again with ``facelib align``), or an unreadable one.
    """
    side = alignment_path(path)
    if not side.is_file():
        raise InputError(f"{path}: no alignment geometry ({side.name}); align the photo again "
                         "(python -m facelib align) to paste edits back")
    try:
        meta = json.loads(side.read_text())
        quad = np.asarray(meta["quad"], dtype=np.float64).reshape(4, 2)
        lm = np.asarray(meta["landmarks"], dtype=np.float64).reshape(-1, 2)
        lma = np.asarray(meta["landmarks_aligned"], dtype=np.float64).reshape(-1, 2)
        source_size = tuple(int(v) for v in meta["source_size"])
        output_size = int(meta["output_size"])
        box = tuple(int(v) for v in meta["box"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{side}: unreadable alignment geometry ({e})") from None
    image_path = side.with_name(meta.get("image") or side.name[:-len(ALIGNMENT_SUFFIX)] + ".png")
    image = load_image(image_path) if image_path.is_file() else Image.new("RGB", (output_size, output_size))
    source = meta.get("source")
    for cand in (meta.get("photo"), meta.get("photo_abs")):
        if cand and (side.parent / cand).is_file():
            source = str((side.parent / cand).resolve())
            break
    return AlignedFace(image=image, landmarks=lm, landmarks_aligned=lma, box=box, quad=quad,  # type: ignore[arg-type]
                       source_size=source_size, output_size=output_size, source=source,  # type: ignore[arg-type]
                       detector=str(meta.get("detector", "hog")))


def alignment_folder(folder: "str | os.PathLike[str]", names: Sequence[str], *, output_size: int,
                     detector: str = "hog", overwrite: bool = False) -> BesideChoice:
    """Where this run writes its crops ``<folder>/<name>`` (notebook 01: ``"<person>/<n>.jpg"``).

    ``folder`` itself, unless it holds a crop of one of ``names`` made with another output size
    or detector (its ``.align.json`` says so, :func:`save_alignment`; a crop without one, by its
    pixel size): then, unless ``overwrite``, those crops are kept byte-identical and this run
    goes beside them into ``<folder>@<tag>`` (:func:`facelib.variants.choose_beside`; the same
    settings always get the same folder).

    Args:
        folder: the usual folder (``out/aligned``).
        names: each crop's path relative to ``folder``.
        output_size, detector: this run's settings (see :func:`align_faces`).
        overwrite: replace crops made with other settings in ``folder``.
    Returns:
        A :class:`facelib.variants.BesideChoice`: ``folder`` to write into, ``note`` to show.
    """
    settings = {"output_size": int(output_size), "detector": str(detector)}
    others: list[str] = []
    for name in [] if overwrite else names:
        image = Path(folder) / name
        if not image.is_file():
            continue
        side = alignment_path(image)
        if side.is_file():
            why = other_settings(side, settings, fmt="facelib.alignment")
        else:
            have = _aligned_size(image)
            why = None if have == output_size else f"made with other settings: output_size {have} (now {output_size})"
        if why:
            others.append(why)
    return choose_beside(folder, settings, others, replace_hint="OVERWRITE = True replaces them")
