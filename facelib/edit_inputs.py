"""The inputs of the edit notebooks: saved projections, reference photos, and random stand-ins.

The style (03) and expression (04) notebooks edit projected faces with references made from
photos. :func:`style_inputs` / :func:`expression_inputs` gather them: the projections of
notebook 02 (:func:`find_projections`), the reference photos aligned
(:func:`facelib.align.align_faces`) and projected (:func:`facelib.project.project_folder`)
once and reused, and random latents (:func:`random_latents`) standing in, said so, for
whatever is missing.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ._io import atomic_path, safe_name
from ._optim import generator_id
from .align import align_faces, load_image
from .align_batch import list_images
from .data import emotion_label, is_emotion_name, locate
from .edits import EMOTIONS
from .errors import CheckpointError, DependencyError, FacelibError, InputError
from .projection import load_projection
from .projection_folder import project_folder
from .variants import recorded_folder

__all__ = ["find_projections", "reference_dir", "aligned_dir", "reference_photo_names", "expression_photos",
           "random_latents", "reference_projections", "EditInputs", "style_inputs", "expression_inputs"]

log = logging.getLogger(__name__)


def find_projections(folder: "str | os.PathLike[str]", *, G: torch.nn.Module | None = None) -> dict[str, Any]:
    """Saved projections under ``folder`` (``<name>.pt`` with its ``.json`` sidecar), by relative name.

    Unreadable files are skipped with a warning. With ``G``, projections whose shape does not
    fit it, or whose recorded generator differs from it, are skipped too (logged).

    Returns:
        {"<person>/<n>": Projection} in sorted order (empty when the folder does not exist).
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    found: dict[str, Any] = {}
    gid = generator_id(G) if G is not None else None
    for pt in sorted(root.rglob("*.pt")):
        rel = pt.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        meta = pt.with_suffix(".json")
        try:
            if json.loads(meta.read_text()).get("format") != "facelib.projection":
                continue
            proj = load_projection(pt)
        except (OSError, ValueError, CheckpointError) as e:
            log.warning("skipping %s: %s", pt, e)
            continue
        if G is not None:
            if tuple(proj.wplus.shape[1:]) != (G.n_latent, G.style_dim):
                log.warning("skipping %s: W+ %s does not fit the generator (%d, %d)", pt,
                            tuple(proj.wplus.shape[1:]), G.n_latent, G.style_dim)
                continue
            if proj.weights_sha256 and gid and proj.weights_sha256 != gid:
                log.warning("skipping %s: projected with another generator (%s...)", pt, proj.weights_sha256[:12])
                continue
        found[rel.with_suffix("").as_posix()] = proj
    return found


def reference_dir(preferred: "str | os.PathLike[str] | None", *, role: str, inventory: Any = None) -> Path | None:
    """Where the photos of a role are: ``preferred`` when it is a folder holding photos, else one
    that :func:`facelib.data.locate` found for ``role``, else None.

    Found folders: "styles": the photo folder itself; "expressions": the folder itself when it
    holds the photos flat (``Happy copy.jpg``), its parent when it is an ``<emotion>/`` folder;
    "aligned": the folder itself when its name says "aligned", else its parent (the folder
    holding ``<person>/<n>.jpg``).

    Args:
        inventory: a :class:`facelib.data.DataInventory` (default: a fresh :func:`~facelib.data.locate`).
    """
    if role not in ("styles", "expressions", "aligned"):
        raise InputError(f"role: expected 'styles', 'expressions' or 'aligned', got {role!r}")
    if preferred and Path(preferred).is_dir() and list_images(Path(preferred)):
        return Path(preferred)
    if inventory is None:
        inventory = locate()
    for folder in getattr(inventory, "image_folders", ()):
        if folder.role != role:
            continue
        path = Path(folder.path)
        if role == "expressions":
            return path.parent if is_emotion_name(path.name) else path
        if role == "aligned":
            return path if "align" in path.name.lower() else path.parent
        return path
    return Path(preferred) if preferred and Path(preferred).is_dir() else None


def aligned_dir(preferred: "str | os.PathLike[str] | None" = "", *, out_dir: "str | os.PathLike[str]" = "out",
                inventory: Any = None) -> Path | None:
    """The aligned photos to use: ``preferred`` when given, else notebook 01's when they hold photos
    (the folder its last run recorded in ``<out_dir>/provenance.json``, ``<out_dir>/aligned`` or
    ``aligned@<tag>`` beside crops of other settings; else ``<out_dir>/aligned``), else an attached
    aligned dataset (``<person>/<n>.jpg``, any case and image extension; :func:`reference_dir`
    with role "aligned"), else None."""
    if preferred:
        return Path(preferred)
    own = recorded_folder(out_dir, "01_alignment", "aligned_dir", Path(out_dir) / "aligned")
    if own.is_dir() and list_images(own):
        return own
    return reference_dir(None, role="aligned", inventory=inventory)


def reference_photo_names(photos: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> dict[str, Path]:
    """Photos by the name their results are kept under.

    Args:
        photos: a folder (searched recursively, any case of :data:`facelib.align.IMAGE_EXTENSIONS`;
            names are paths relative to it without the suffix: ``bad_trip1``, ``set2/green``), or
            a list of photo files (names are their stems; a repeated stem gets its folder's name
            in front: ``a/1`` and ``b/1`` -> ``1``, ``b_1``).
    Returns:
        {name: path}, in sorted path order; empty for a missing folder.
    """
    if isinstance(photos, (str, os.PathLike)):
        root = Path(photos)
        if not root.is_dir():
            return {}
        return {p.relative_to(root).with_suffix("").as_posix(): p for p in list_images(root, recursive=True)}
    named: dict[str, Path] = {}
    for p in sorted(Path(x) for x in photos):
        name = p.stem
        if name in named:
            name = f"{p.parent.name}_{p.stem}"
        k = 2
        while name in named:
            name, k = f"{p.stem}_{k}", k + 1
        named[name] = p
    return named


def expression_photos(folder: "str | os.PathLike[str]") -> dict[str, list[Path]]:
    """Expression photos under ``folder`` grouped by emotion label (:func:`facelib.data.emotion_label`).

    A photo's emotion is its deepest folder that names a known emotion (``Happy/1.jpg``), else its
    own name when that names one (``Happy copy.jpg``, ``sadness (2).PNG``), else its folder under
    ``folder`` (``Smug/1.jpg``), else its own name (``Smug copy.jpg``): so any emotion name works,
    flat or in folders, in any case.

    Returns:
        {emotion: [photo, ...]}: "neutral" first, then the report's emotions (happy, sad, fear)
        as present, then the others alphabetically; empty for a missing folder.
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    groups: dict[str, list[Path]] = {}
    for p in list_images(root, recursive=True):
        dirs = p.relative_to(root).parts[:-1]
        known = [d for d in reversed(dirs) if is_emotion_name(d)]
        if known:
            label = emotion_label(known[0])
        elif is_emotion_name(p.stem):
            label = emotion_label(p.stem)
        else:
            label = emotion_label(dirs[-1]) if dirs else emotion_label(p.stem)
        if not label:
            log.warning("skipping %s: its name names no emotion", p)
            continue
        groups.setdefault(label, []).append(p)
    order = {e: i for i, e in enumerate(EMOTIONS)}
    return {k: groups[k] for k in sorted(groups, key=lambda e: (order.get(e, len(order)), e))}


@torch.no_grad()
def random_latents(G: torch.nn.Module, n: int, *, seed: int = 0, truncation: float = 0.7) -> torch.Tensor:
    """``n`` random W latents broadcast to every W+ row: (n, n_latent, D), CPU, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, G.style_dim, generator=g)
    device = next(G.parameters()).device
    w = G.mapping(z.to(device)).float()
    if truncation < 1:
        avg = G.latent_avg if G.latent_avg is not None else G.mean_latent(4096)
        avg = avg.to(w).reshape(1, -1)
        w = avg + truncation * (w - avg)
    return w[:, None].repeat(1, G.n_latent, 1).cpu()


def reference_projections(G: torch.nn.Module, photos: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]",
                          work_dir: "str | os.PathLike[str]", *, steps: int = 500, progress: bool = True,
                          **project_options: Any) -> dict[str, Any]:
    """Align and project reference photos, reusing earlier results.

    Photos are FFHQ-aligned into ``work_dir/aligned/<name>.png`` (a photo without a detectable
    face, such as a painting, is centre-cropped instead, with a warning; an aligned file already
    there is reused), projected into ``work_dir/latents`` (skipped when already there with the
    same settings) and returned by name (:func:`reference_photo_names`).

    Args:
        G: the generator.
        photos: a folder of photos (recursively; any case of .jpg/.jpeg/.png/...) or a list of files.
        work_dir: where aligned images and projections are kept.
        steps, project_options: projection settings (:func:`facelib.project`).
    Returns:
        {name: Projection}, sorted; empty when there are no photos.
    """
    return _references(G, photos, Path(work_dir), steps, progress, project_options)[0]


def _references(G: torch.nn.Module, photos: Any, work: Path, steps: int, progress: bool,
                options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """:func:`reference_projections` of ``photos``, and the aligned photo of each projected one
    ({name: path}, in the photos' order)."""
    named = reference_photo_names(photos)
    if not named:
        return {}, {}
    aligned = work / "aligned"
    size = max(256, G.resolution)
    ready = {n: aligned / f"{n}.png" for n in named if (aligned / f"{n}.png").is_file()}  # aligned before
    todo = [(n, p) for n, p in named.items() if n not in ready]
    for name, path in tqdm(todo, desc="align", unit="img", disable=not progress or not todo):
        out = aligned / f"{name}.png"
        try:
            img = align_faces(path, output_size=size, max_faces=1)[0].image
        except DependencyError:
            raise  # a missing model affects every photo: stop with the clear message
        except (FacelibError, OSError, RuntimeError, ValueError) as why:  # no face (a painting), or dlib failed
            try:
                img = ImageOps.fit(load_image(path), (size, size), Image.Resampling.LANCZOS)
            except InputError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            log.warning("%s: %s; using a centre crop instead", path.name, why)
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")
        ready[name] = out
    if not ready:
        return {}, {}
    projected = project_folder(aligned, work / "latents", G, progress=progress, steps=steps, **options)
    if projected.failed or projected.kept:  # kept: finished projections of other settings are reused, not replaced
        log.warning("%s", projected.summary())
    found = find_projections(work / "latents", G=G)
    result = {n: found[n] for n in named if n in found and n in ready}
    return result, {n: ready[n] for n in result}


@dataclass(frozen=True)
class EditInputs:
    """Latents for a notebook: what to edit, the references, and where they came from.

    Attributes:
        targets: {name: Projection or (1, n_latent, D) tensor} faces to edit.
        references: {name: {item name: latent}}: styles (notebook 03) or
            ``{"neutral": ..., "happy": ..., ...}`` (notebook 04).
        photos: {reference name: its aligned photo} for the table's photo row (empty without photos).
        notes: human-readable lines on what was used (and what stood in for missing inputs).
        stand_ins: True when random latents replaced missing projections or photos.
        stand_in_for: what the random latents replaced: "targets", "styles", or the emotion
            labels without usable photos (empty when every input is real).
    """

    targets: dict[str, Any]
    references: dict[str, dict[str, Any]]
    photos: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    stand_ins: bool = False
    stand_in_for: tuple[str, ...] = ()

    @property
    def reference_label(self) -> str:
        """How a grid labels the reference latents: "projection", or "stand-in (random latent)" when
        random latents stood in for any reference (a style or an emotion)."""
        return "stand-in (random latent)" if any(x != "targets" for x in self.stand_in_for) else "projection"

    def stand_in_note(self) -> str:
        """The grid-title note " | random latents stand in for: targets, sad" ("" when every input is real)."""
        return f" | random latents stand in for: {', '.join(self.stand_in_for)}" if self.stand_in_for else ""


def _pick_targets(G: torch.nn.Module, latents_dir: Any, target: str | None, n_targets: int,
                  seed: int, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    projections = find_projections(latents_dir, G=G) if latents_dir else {}
    if target is not None:
        if target not in projections:
            raise InputError(f"TARGET {target!r}: no such projection in {latents_dir} "
                             f"(found: {sorted(projections)[:10]})")
        names = [target]
    else:
        names = list(projections)[:n_targets]
    if names:
        notes.append(f"targets: projection(s) {names} from {latents_dir}")
        return {n: projections[n] for n in names}, {k: v for k, v in projections.items() if k not in names}, False
    notes.append(f"targets: no projections in {latents_dir} fit this generator; using {n_targets} random latent(s) "
                 f"(seed {seed}) instead (run notebook 02 first for real faces)")
    w = random_latents(G, n_targets, seed=seed)
    return {f"random_{i}": w[i:i + 1] for i in range(n_targets)}, {}, True


def style_inputs(G: torch.nn.Module, *, latents_dir: Any = "out/latents", styles_dir: Any = "data/styles",
                 work_dir: Any = "out/styles", target: str | None = None, n_targets: int = 1, n_styles: int = 4,
                 project_steps: int = 500, seed: int = 0, progress: bool = True, **project_options: Any) -> EditInputs:
    """Content faces and styles for notebook 03, falling back step by step.

    Contents: projections in ``latents_dir`` (``target`` picks one by name, else the first
    ``n_targets``); random latents when there are none. Styles: photos in ``styles_dir``
    (aligned and projected into ``work_dir``, reused on re-runs); otherwise other projections
    in ``latents_dir``; otherwise ``n_styles`` random latents.
    """
    notes: list[str] = []
    targets, others, stand = _pick_targets(G, latents_dir, target, n_targets, seed, notes)
    photos: dict[str, Path] = {}
    styles: dict[str, Any] = {}
    sdir = Path(styles_dir) if styles_dir else None
    if sdir is not None and sdir.is_dir():
        styles, photos = _references(G, sdir, Path(work_dir), project_steps, progress, project_options)
        notes.append(f"styles: {len(styles)} photo(s) from {sdir} ({', '.join(styles) or 'none usable'}), "
                     f"projected into {Path(work_dir) / 'latents'}")
    where = f"in {sdir}" if sdir is not None else "(no style photo folder found)"
    if not styles and others:
        styles = dict(list(others.items())[:n_styles])
        notes.append(f"styles: no photos {where}; using other projections {list(styles)}")
    random_styles = not styles
    if random_styles:
        w = random_latents(G, n_styles, seed=seed + 1000)
        styles = {f"random_style_{i}": w[i:i + 1] for i in range(n_styles)}
        notes.append(f"styles: no photos {where} and no other projections; {n_styles} random latents stand in")
    random_for = (("targets",) if stand else ()) + (("styles",) if random_styles else ())
    return EditInputs(targets=targets, references={"styles": styles}, photos=photos, notes=tuple(notes),
                      stand_ins=bool(random_for), stand_in_for=random_for)


def expression_inputs(G: torch.nn.Module, *, latents_dir: Any = "out/latents",
                      expressions_dir: Any = "data/expressions", work_dir: Any = "out/expressions",
                      emotions: Sequence[str] | None = None, target: str | None = None, n_targets: int = 1,
                      project_steps: int = 500, seed: int = 0, progress: bool = True,
                      **project_options: Any) -> EditInputs:
    """Targets and reference emotions for notebook 04.

    References are the photos of :func:`expression_photos` (``<emotion>/`` folders or flat files
    named after the emotion, such as ``Happy copy.jpg``; any case), aligned and projected into
    ``work_dir/<emotion>/``, reused on re-runs. ``references`` is keyed by emotion label, the
    neutral one first. Targets as in :func:`style_inputs`.

    Args:
        emotions: which emotions, the neutral one first (any case and form: "Happy",
            "happiness"); None or empty: every emotion found among the photos, "neutral" first
            (:data:`EMOTIONS` when there are no photos). An emotion without photos gets a random
            latent (its delta is then meaningless; noted, ``stand_ins`` True).
    """
    root = Path(expressions_dir) if expressions_dir else None
    groups = expression_photos(root) if root is not None else {}
    if emotions:
        labels = [emotion_label(e) or str(e) for e in emotions]
    elif groups:
        labels = list(groups) if "neutral" in groups else ["neutral", *groups]
    else:
        labels = list(EMOTIONS)
    labels = list(dict.fromkeys(labels))
    if len(labels) < 2:
        raise InputError(f"emotions: expected the neutral one and at least one more, e.g. ('neutral', 'happy'); "
                         f"got {labels} (photos found for: {sorted(groups) or 'none'})")
    notes: list[str] = []
    targets, _, stand = _pick_targets(G, latents_dir, target, n_targets, seed, notes)
    refs: dict[str, dict[str, Any]] = {}
    photos: dict[str, Path] = {}
    missing, used = [], []
    for k, emo in enumerate(labels):
        found: dict[str, Any] = {}
        files = groups.get(emo, [])
        if files:
            found, aligned = _references(G, files, Path(work_dir) / safe_name(emo), project_steps, progress,
                                         project_options)
            if aligned:
                photos[emo] = next(iter(aligned.values()))
                used.append(f"{emo} ({', '.join(p.name for p in files)})")
        if not found:
            missing.append(emo)
            w = random_latents(G, 1, seed=seed + 2000 + k)
            found = {f"random_{emo}": w}
        refs[emo] = found
    if used:
        notes.append(f"references: photos from {root}: " + "; ".join(used))
    if missing:
        where = f"in {root}" if root is not None else "(no expression photo folder found)"
        notes.append(f"references: no usable photos for {missing} {where} (photos found for: "
                     f"{sorted(groups) or 'none'}); random latents stand in, so those deltas are meaningless")
    random_for = (("targets",) if stand else ()) + tuple(missing)
    return EditInputs(targets=targets, references=refs, photos=photos, notes=tuple(notes), stand_ins=bool(random_for),
                      stand_in_for=random_for)


