"""Face attributes measured on images: the labels that edit directions are learned from.

Everything here is measured with models facelib already uses, so labels need no labelled
dataset:

* from dlib's 68 landmarks (:func:`facelib.dlib_judge.dlib_landmarks`), all divided by the
  inter-ocular distance ``d`` and taken in the face's own frame (``u`` = unit eye-to-eye axis,
  ``v`` its perpendicular pointing down the face), so they do not depend on image size or
  in-plane rotation:

  - ``mouth_open``: mean gap between the inner lips (points 61-63 vs 67-65) along ``v``, / d;
  - ``smile``: mouth width (corner 48 to corner 54) / d plus the corners' lift above the lip
    centre (midpoint of points 51 and 57) along ``v``, / d. An open smile is wide and lifts the
    corners; a closed, relaxed mouth is narrower with level corners;
  - ``eyes_open``: eye aspect ratio (Soukupova & Cech 2016), mean over both eyes:
    (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) on points 36-41 and 42-47;
  - ``yaw`` / ``pitch``: :func:`facelib.dlib_judge.pose_proxy`.

* ``identity``: cosine similarity of ArcFace embeddings to a reference embedding.
* user scores: :func:`read_scores` reads a CSV of ``file,value`` rows (for the user's own
  photos projected into W+).

Images without a detectable face (every image of an untrained generator) get NaN and are
counted in :attr:`Measurements.skipped`; nothing is guessed for them.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ._io import atomic_path
from ._optim import generator_id
from .errors import InputError, NoFaceError, ShapeError
from .dlib_judge import dlib_landmarks, pose_proxy
from .identity import identity_crop

__all__ = [
    "LANDMARK_ATTRIBUTES",
    "ATTRIBUTES",
    "landmark_attributes",
    "Measurements",
    "measure_attributes",
    "identity_similarity",
    "read_scores",
    "LabelledLatents",
    "label_latents",
    "latents_with_scores",
]

log = logging.getLogger(__name__)

#: Attributes computed from 68 landmarks by :func:`landmark_attributes`.
LANDMARK_ATTRIBUTES: tuple[str, ...] = ("smile", "mouth_open", "eyes_open", "yaw", "pitch")

#: Every attribute :func:`measure_attributes` knows (``identity`` needs a reference and ArcFace).
ATTRIBUTES: tuple[str, ...] = LANDMARK_ATTRIBUTES + ("identity",)


def landmark_attributes(landmarks68: Any) -> dict[str, np.ndarray]:
    """Smile, mouth opening, eye opening, yaw and pitch from 68-point landmarks.

    Args:
        landmarks68: (68, 2) or (N, 68, 2) (x, y) points (iBUG 300-W order), or a
            :class:`facelib.dlib_judge.DlibLandmarks`.
    Returns:
        {name: (N,) float64} for every name in :data:`LANDMARK_ATTRIBUTES` (N = 1 for one face).
        Scale-free (divided by the inter-ocular distance); see the module docstring.
    Raises:
        ShapeError: not (N, 68, 2). InputError: the eye centres coincide.
    """
    pts = getattr(landmarks68, "points", landmarks68)
    pts = np.asarray(pts.detach().cpu() if isinstance(pts, torch.Tensor) else pts, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ShapeError(f"landmarks68: expected (68, 2) or (N, 68, 2), got {pts.shape}",
                         actual_shape=pts.shape, expected_shape=(None, 68, 2))
    left, right = pts[:, 36:42].mean(1), pts[:, 42:48].mean(1)
    d = np.linalg.norm(right - left, axis=1)
    if np.any(d <= 0):
        raise InputError("landmarks68: the eye centres coincide")
    u = (right - left) / d[:, None]                      # [N, 2] eye-to-eye axis
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)            # [N, 2] down the face (image y grows down)

    def along(a: np.ndarray, axis: np.ndarray) -> np.ndarray:
        return (a * axis).sum(-1)

    upper, lower = pts[:, [61, 62, 63]], pts[:, [67, 66, 65]]
    mouth_open = along(lower - upper, v[:, None]).mean(1) / d
    corners = pts[:, [48, 54]]
    width = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1) / d
    centre = (pts[:, 51] + pts[:, 57]) / 2
    lift = along(centre[:, None] - corners, v[:, None]).mean(1) / d   # > 0: corners above the lip centre
    smile = width + lift

    def ear(eye: np.ndarray) -> np.ndarray:  # eye [N, 6, 2]
        vertical = np.linalg.norm(eye[:, 1] - eye[:, 5], axis=1) + np.linalg.norm(eye[:, 2] - eye[:, 4], axis=1)
        horizontal = np.linalg.norm(eye[:, 0] - eye[:, 3], axis=1)
        return vertical / (2 * np.maximum(horizontal, 1e-9))

    eyes_open = (ear(pts[:, 36:42]) + ear(pts[:, 42:48])) / 2
    yaw, pitch = pose_proxy(pts)
    return {"smile": smile, "mouth_open": mouth_open, "eyes_open": eyes_open,
            "yaw": np.asarray(yaw, dtype=np.float64), "pitch": np.asarray(pitch, dtype=np.float64)}


@dataclass(frozen=True, eq=False)
class Measurements:
    """Output of :func:`measure_attributes`.

    Attributes:
        values: {attribute: (N,) float64}; NaN where the image had no detectable face.
        detected: (N,) bool, True where dlib's detector found a face (always True when only
            ``identity`` was measured).
        skipped: number of images without a face.
    """

    values: Mapping[str, np.ndarray]
    detected: np.ndarray
    skipped: int

    def __len__(self) -> int:
        return len(self.detected)


def identity_similarity(images: torch.Tensor, reference: torch.Tensor, arcface: torch.nn.Module) -> np.ndarray:
    """Cosine similarity of each image's ArcFace embedding to ``reference``.

    Args:
        images: (N, 3, H, W) float RGB in [-1, 1], FFHQ-aligned.
        reference: (512,) or (1, 512) L2-normalised embedding (or an aligned (1, 3, H, W) image).
        arcface: a network from :func:`facelib.identity.load_arcface` (returns L2-normalised rows).
    Returns:
        (N,) float64 in [-1, 1].
    """
    dev = next(arcface.parameters()).device
    with torch.no_grad():
        if reference.ndim == 4:
            reference = arcface(identity_crop(reference.to(dev).float()))
        ref = torch.nn.functional.normalize(reference.reshape(1, -1).to(dev).float(), dim=1)
        emb = arcface(identity_crop(images.to(dev).float()))
    return (emb @ ref.T)[:, 0].double().cpu().numpy()


def measure_attributes(images: Any, attributes: Sequence[str] = LANDMARK_ATTRIBUTES, *,
                       reference: torch.Tensor | None = None, arcface: torch.nn.Module | None = None
                       ) -> Measurements:
    """Measure ``attributes`` on each image; images without a detectable face get NaN.

    Args:
        images: (N, 3, H, W) float tensor in [-1, 1], or photo paths / PIL images / uint8 arrays.
            dlib's HOG detector needs faces of roughly 80 px and up.
        attributes: names from :data:`ATTRIBUTES`.
        reference, arcface: needed for ``identity`` (see :func:`identity_similarity`).
    Returns:
        :class:`Measurements`.
    Raises:
        InputError: an unknown attribute, or ``identity`` without reference/arcface.
        DependencyError: dlib or its landmark model is missing.
    """
    names = [str(a) for a in ([attributes] if isinstance(attributes, str) else attributes)]
    unknown = [a for a in names if a not in ATTRIBUTES]
    if unknown or not names:
        raise InputError(f"attributes: unknown {unknown or names}; known: {list(ATTRIBUTES)}")
    batched = isinstance(images, (list, tuple)) or (
        isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4)
    items = list(images) if batched else [images]
    n = len(items)
    values = {a: np.full(n, np.nan) for a in names}
    detected = np.ones(n, dtype=bool)
    landmark_names = [a for a in names if a in LANDMARK_ATTRIBUTES]
    if landmark_names:
        for i, item in enumerate(items):
            try:
                lm = dlib_landmarks(item, fallback=None)
            except NoFaceError:
                detected[i] = False
                continue
            measured = landmark_attributes(lm)
            for a in landmark_names:
                values[a][i] = float(measured[a][0])
    if "identity" in names:
        if reference is None or arcface is None:
            raise InputError("attributes: 'identity' needs reference= (an embedding or aligned image) and arcface=")
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise InputError("attributes: 'identity' is measured on a (N, 3, H, W) tensor of aligned images")
        sim = identity_similarity(images, reference, arcface)
        values["identity"] = np.where(detected, sim, np.nan)
    skipped = int((~detected).sum())
    if skipped:
        log.info("measure_attributes: no face found in %d of %d images (left as NaN)", skipped, n)
    return Measurements({a: values[a] for a in names}, detected, skipped)


def read_scores(path: "str | os.PathLike[str]") -> dict[str, float]:
    """A user's CSV of ``file,value`` rows -> {file stem: value}.

    A header row is allowed (its value column is not a number); blank lines and lines starting
    with ``#`` are skipped. Keys are file stems (``photos/anna.jpg`` -> ``anna``), so they match
    the names of projections saved from those photos.

    Raises:
        InputError: the file is missing, a row has no value or an unreadable one, a stem repeats,
            or there are no rows.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: scores file not found (expected a CSV of file,value rows)")
    out: dict[str, float] = {}
    with p.open(newline="", encoding="utf-8-sig") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) < 2 or not cells[1]:
                raise InputError(f"{p}:{lineno}: expected 'file,value', got {','.join(cells)!r}")
            try:
                value = float(cells[1])
            except ValueError:
                if not out and lineno == 1:
                    continue  # a header row
                raise InputError(f"{p}:{lineno}: value {cells[1]!r} is not a number") from None
            if not math.isfinite(value):
                raise InputError(f"{p}:{lineno}: value {cells[1]!r} is not finite")
            stem = Path(cells[0]).stem
            if stem in out:
                raise InputError(f"{p}:{lineno}: {stem!r} appears twice")
            out[stem] = value
    if not out:
        raise InputError(f"{p}: no file,value rows")
    return out


@dataclass(frozen=True, eq=False)
class LabelledLatents:
    """Output of :func:`label_latents` / :func:`latents_with_scores`.

    Attributes:
        w: (N, style_dim) latents (rows of W+ averaged for projections).
        scores: {attribute: (N,) float64}, NaN where not measured (no face).
        skipped: images without a detectable face.
        names: per latent, where it came from ("seed 0 #12", a projection's stem).
    """

    w: torch.Tensor
    scores: Mapping[str, np.ndarray]
    skipped: int
    names: tuple[str, ...] = ()


def label_latents(G: Any, n: int, attributes: Sequence[str] = ("smile",), *, seed: int = 0,
                  truncation: float = 0.7, batch_size: int = 8, progress: bool = True,
                  reference: torch.Tensor | None = None, arcface: torch.nn.Module | None = None,
                  measure_size: int = 256, cache: "str | os.PathLike[str] | None" = None) -> LabelledLatents:
    """Sample ``n`` latents, render them and measure ``attributes`` (:mod:`facelib.attributes`).

    Args:
        G: generator (or an object with ``.generator``: a tuning result renders through its own).
        n: number of samples; z ~ N(0, I) drawn with ``seed``, truncated towards the mean w.
        attributes: names from :data:`ATTRIBUTES`.
        batch_size: render batch.
        reference, arcface: for the ``identity`` attribute.
        measure_size: renders larger than this are area-downsampled to it before dlib looks at
            them (the landmark measures are scale-free; 256 px keeps an FFHQ face near 150 px).
        cache: a ``.pt`` file; when it holds the labels of the same generator, n, seed,
            truncation and attributes they are loaded instead of rendered again, else they are
            computed and written there.
    Returns:
        :class:`LabelledLatents`; images in which dlib finds no face (all of them for an
        untrained generator) are NaN and counted in ``skipped``.
    """
    G = getattr(G, "generator", G)
    if int(n) < 1:
        raise InputError(f"n: expected a positive number of samples, got {n}")
    attributes = [str(a) for a in attributes]
    key = {"generator": generator_id(G), "n": int(n), "seed": int(seed), "truncation": float(truncation),
           "attributes": attributes, "measure_size": int(measure_size),
           "reference": None if reference is None else float(reference.double().sum())}
    if cache is not None and Path(cache).is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable cache is recomputed
            log.warning("label cache %s unreadable (%s): measuring again", cache, e)
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key:
            return LabelledLatents(saved["w"], {a: saved["scores"][a].numpy() for a in attributes},
                                   int(saved["skipped"]), tuple(f"seed {seed} #{i}" for i in range(int(n))))
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), G.style_dim, generator=g)
    with torch.no_grad():
        w = G.mapping(z.to(G.device))
        if truncation < 1:
            avg = G.latent_avg if getattr(G, "latent_avg", None) is not None else G.mean_latent(4096)
            w = avg.to(w) + truncation * (w - avg.to(w))
    scores: dict[str, list[np.ndarray]] = {a: [] for a in attributes}
    skipped = 0
    for start in tqdm(range(0, int(n), batch_size), desc="label latents", disable=not progress):
        with torch.no_grad():
            images = G.synthesis(w[start:start + batch_size]).clamp(-1, 1).float().cpu()
        if images.shape[-1] > measure_size:
            images = torch.nn.functional.interpolate(images, size=(measure_size, measure_size), mode="area")
        m = measure_attributes(images, attributes, reference=reference, arcface=arcface)
        skipped += m.skipped
        for a in attributes:
            scores[a].append(m.values[a])
    if skipped:
        log.warning("label_latents: no face found in %d of %d samples (skipped)", skipped, n)
    out = LabelledLatents(w.detach().float().cpu(), {a: np.concatenate(v) for a, v in scores.items()}, skipped,
                          tuple(f"seed {seed} #{i}" for i in range(int(n))))
    if cache is not None:
        with atomic_path(cache) as tmp:
            torch.save({"key": key, "w": out.w, "skipped": skipped,
                        "scores": {a: torch.from_numpy(v) for a, v in out.scores.items()}}, tmp)
    return out


def latents_with_scores(latents: Mapping[str, Any], scores: Mapping[str, float], *,
                        attribute: str = "score") -> LabelledLatents:
    """Pair a user's projected photos with their scores (e.g. from :func:`facelib.attributes.read_scores`).

    Args:
        latents: {name: projection / W+ (n_latent, D) or (1, n_latent, D)}, e.g. from
            :func:`facelib.edit_inputs.find_projections` (names like "anna/0").
        scores: {name: value}; a latent matches by its full name or its last part ("0").
    Returns:
        :class:`LabelledLatents` over the names present in both (W+ rows averaged to one w).
    Raises:
        InputError: no name in common.
    """
    def score_key(name: str) -> str | None:
        for key in (name, Path(name).name):
            if key in scores:
                return key
        return None

    pairs = [(k, score_key(k)) for k in latents]
    pairs = [(k, s) for k, s in pairs if s is not None]
    common = [k for k, _ in pairs]
    if not common:
        raise InputError(f"scores: none of the {len(scores)} names match the {len(latents)} latents "
                         f"(e.g. {sorted(scores)[:3]} vs {sorted(latents)[:3]}); names are file stems")
    missing = sorted(set(scores) - {s for _, s in pairs})
    if missing:
        log.warning("scores: %d names have no latent: %s", len(missing), missing[:5])
    ws = []
    for k in common:
        x = getattr(latents[k], "wplus", latents[k])
        x = torch.as_tensor(x).detach().double().cpu()
        ws.append(x.reshape(-1, x.shape[-1]).mean(0) if x.ndim >= 2 else x)
    return LabelledLatents(torch.stack(ws).float(), {attribute: np.array([scores[s] for _, s in pairs], dtype=np.float64)},
                           0, tuple(common))
