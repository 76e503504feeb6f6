"""Direction files on disk and the pictures the notebooks show of them.

* :func:`directions_for`: the SeFa / PCA directions of a generator, computed once and saved as
  ``out/directions/<name>.pt`` + ``.json`` (reused by every notebook and the command line);
* :func:`find_directions`: every saved direction file that belongs to a generator;
* :func:`pick_target`: the projected face to edit (a projection of notebook 02, else a
  random latent, said so);
* :func:`strip_grid`: one row per direction, the face moved from -3 sigma to +3 sigma;
* :func:`export_edits`: chosen edits as a grid plus one image each, for the report.

The interactive preview with sliders is :class:`facelib.previews.DirectionPreview`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ._optim import generator_id
from .directions import Direction, Directions, direction_strip, generator_of, load_directions
from .directions import pca_directions, sefa_directions
from .edit_inputs import find_projections, random_latents
from .edits import LayerMask, MaskSpec, render
from .errors import CheckpointError, InputError
from .paste import paste_file, photo_path
from .previews import DirectionPreview
from .grids import make_grid, save_image, stamp, to_pil

__all__ = ["directions_for", "find_directions", "pick_target", "strip_grid", "export_edits", "ChosenEdit"]

log = logging.getLogger(__name__)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "x"


def directions_for(G: Any, method: str = "sefa", *, rows: MaskSpec = "all", k: int = 10,
                   folder: "str | os.PathLike[str]" = "out/directions", samples: int = 10000, seed: int = 0,
                   overwrite: bool = False, name: str | None = None) -> tuple[Directions, Path, bool]:
    """SeFa or PCA directions of ``G``, loaded from ``folder`` when saved before for this generator.

    The file is ``<folder>/<name>.pt``, by default ``sefa_<rows>`` (e.g. ``sefa_0-3``) or ``pca``;
    a saved file is reused when its generator hash, rows and method match and it holds at least
    ``k`` directions (``overwrite=True`` always recomputes). A file made for another generator (or
    other rows or fewer directions) is never replaced unasked: the new result goes to
    ``<name>_<generator hash>.pt``.

    Returns:
        (directions (the first k), path of the file, True when loaded rather than computed).
    Raises:
        InputError: an unknown method (``fit`` directions come from labels: see
            :func:`facelib.fit_direction`).
    """
    G = generator_of(G)
    method = str(method).lower()
    if method not in ("sefa", "pca"):
        raise InputError(f"method {method!r}: directions_for computes 'sefa' or 'pca'; learned ('fit') "
                         "directions come from facelib.fit_direction and are saved with Direction.save")
    chosen = LayerMask.coerce(rows, G.n_latent, name="rows").rows if method == "sefa" else None
    if name is None:
        name = f"sefa_{_safe(str(LayerMask.from_rows(chosen, G.n_latent)))}" if method == "sefa" else "pca"
    elif _safe(name) != name:
        raise InputError(f"name {name!r}: use letters, digits, '_', '-' and '.' only")
    gid = generator_id(G)
    path = Path(folder) / f"{name}.pt"
    for candidate in (path, path.with_name(f"{name}_{_safe(gid)[:12]}.pt")):
        if overwrite or not candidate.is_file():
            path = candidate
            break
        try:
            saved = load_directions(candidate)
        except CheckpointError as e:
            log.warning("not reusing %s", e)
            continue
        if (saved.method == method and saved.weights_sha256 == gid and len(saved) >= k
                and saved.rows == (tuple(chosen) if chosen is not None else None)):
            return _first(saved, k), candidate, True
    else:  # both names hold other results: never replaced unasked
        raise InputError(f"{path}: holds directions of another generator, rows or size; pass overwrite=True "
                         "or another name")
    d = sefa_directions(G, chosen, k, seed=seed) if method == "sefa" else pca_directions(G, k, n=samples, seed=seed)
    d.save(path)
    return d, path, False


def _first(d: Directions, k: int) -> Directions:
    acc = d.accuracies[:k] if d.accuracies is not None else None
    return Directions(d.vectors[:k], d.values[:k], d.sigmas[:k], d.rows, d.method, d.names[:k],
                      d.weights_sha256, acc, d.meta)


def find_directions(folder: "str | os.PathLike[str]" = "out/directions", *, G: Any = None) -> dict[str, Directions]:
    """Saved directions under ``folder`` by file stem (sorted); unreadable files are skipped with a warning.

    With ``G``, files made for another generator (a different recorded hash) are skipped too.
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    gid = generator_id(generator_of(G)) if G is not None else None
    found: dict[str, Directions] = {}
    for pt in sorted(root.glob("*.pt")):
        if pt.name.startswith("."):
            continue
        try:
            d = load_directions(pt)
        except CheckpointError as e:
            log.warning("skipping %s", e)
            continue
        if gid and d.weights_sha256 and d.weights_sha256 != gid:
            log.info("skipping %s: made for another generator (%s...)", pt, d.weights_sha256[:12])
            continue
        found[pt.stem] = d
    return found


def pick_target(G: Any, latents_dir: "str | os.PathLike[str] | None", name: str | None = None, *,
                seed: int = 0) -> tuple[str, Any, str]:
    """The face to edit: projection ``name`` (or the first) under ``latents_dir``, else a random latent.

    Returns:
        (name, projection or (1, n_latent, D) latent, a note saying which).
    Raises:
        InputError: ``name`` given but not found.
    """
    G = generator_of(G)
    found = find_projections(latents_dir, G=G) if latents_dir else {}
    if name is not None:
        if name not in found:
            raise InputError(f"TARGET {name!r}: no such projection in {latents_dir} (found: {sorted(found)[:10]})")
        return name, found[name], f"target: projection {name!r} from {latents_dir}"
    if found:
        first = next(iter(found))
        return first, found[first], f"target: projection {first!r} from {latents_dir}"
    return ("random_0", random_latents(G, 1, seed=seed),
            f"target: no projections in {latents_dir} fit this generator; a random latent (seed {seed}) "
            "stands in (run notebook 02 first for a real face)")


def _label(d: Direction) -> str:
    extra = f", acc {d.accuracy:.2f}" if d.accuracy is not None else ""
    return f"{d.name} (sigma {d.sigma:.2g}{extra})" if d.sigma else f"{d.name}{extra}"


def strip_grid(G: Any, target: Any, directions: "Directions | Sequence[Direction]", *,
               sigmas: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3), mask: MaskSpec = None, cell: int = 160,
               title: str | None = None):
    """One row per direction: ``target`` moved by each of ``sigmas`` standard deviations along it.

    Args:
        G: generator, or an object with ``.generator`` (renders through it).
        target: a projection or a (n_latent, D) / (1, n_latent, D) W+.
        directions: :class:`Directions` or a list of :class:`Direction`.
        mask: rows to edit; None = each direction's own rows.
    Returns:
        PIL image.
    """
    rows = [list(direction_strip(G, target, d, sigmas=sigmas, mask=mask)) for d in directions]
    return make_grid(rows, cell=cell, row_labels=[_label(d) for d in directions],
                     col_labels=[f"{s:+g} sigma" if s else "0" for s in sigmas], title=title)


@dataclass(frozen=True)
class ChosenEdit:
    """One edit to export: direction ``index``, ``strength`` in sigma units, ``rows`` (None = its own)."""

    index: int
    strength: float
    rows: str | None = None


def export_edits(G: Any, target: Any, directions: "Directions | Sequence[Direction]", edits: Sequence[Any],
                 folder: "str | os.PathLike[str]", *, cell: int = 256, label: str | None = None,
                 title: str | None = None, tuning: Any = None,
                 paste_back: "str | os.PathLike[str] | None" = None) -> tuple[Any, list[Path]]:
    """Render chosen edits and write them: ``<folder>/<n>_<direction>_<strength>.jpg`` and ``<folder>/grid.jpg``.

    Args:
        edits: :class:`ChosenEdit` or ``[index, strength]`` / ``[index, strength, rows]`` lists.
        label: stamped on every image (smoke runs).
        tuning: render through this one-photo :class:`~facelib.tuning.Tuning` of the target (also
            used when ``target`` is a projection carrying its tuning).
        paste_back: the target's aligned crop (with its ``.align.json``): each edit is also pasted
            into the original photo, ``<n>_<direction>_<strength>.photo.jpg`` beside it.
    Returns:
        (the grid (target, then each edit), paths written, pasted photos included).
    Raises:
        InputError: a malformed edit or a direction index out of range.
    """
    G = generator_of(G)
    dirs = list(directions)
    chosen = []
    for e in edits:
        if not isinstance(e, ChosenEdit):
            if not isinstance(e, (list, tuple)) or len(e) not in (2, 3):
                raise InputError(f"edits: expected [index, strength] or [index, strength, rows], got {e!r}")
            e = ChosenEdit(int(e[0]), float(e[1]), None if len(e) == 2 or e[2] in (None, "") else str(e[2]))
        if not 0 <= e.index < len(dirs):
            raise InputError(f"edits: direction index {e.index} out of range (there are {len(dirs)})")
        chosen.append(e)
    preview = DirectionPreview(G, target, dirs, cell=cell, tuning=tuning)
    G = preview.generator()  # the tuned generator when there is a tuning
    images, captions = [preview.base], ["target"]
    folder = Path(folder)
    written = []
    for n, e in enumerate(chosen):
        strengths = [0.0] * len(dirs)
        strengths[e.index] = e.strength
        img = render(G, preview.edited(strengths, e.rows), noise=preview.noises)[0]
        d = dirs[e.index]
        caption = f"{d.name} {e.strength:+g} sigma" + (f", rows {e.rows}" if e.rows else "")
        images.append(img)
        captions.append(caption)
        pil = to_pil(img)
        path = folder / f"{n:02d}_{_safe(d.name)}_{e.strength:+g}.jpg"
        save_image(stamp(pil, label) if label else pil, path, quality=95)
        written.append(path)
        if paste_back:
            written.append(paste_file(img, paste_back, photo_path(path), stamp_text=label))
    grid = make_grid([images], cell=cell, captions=[captions], title=title)
    grid = stamp(grid, label) if label else grid
    save_image(grid, folder / "grid.jpg", quality=92)
    written.append(folder / "grid.jpg")
    return grid, written
