"""Judging a face swap: identity with the optimised network and with dlib, pose against the target.

:func:`judge_swap` scores result images against the identity donors and the images they started
from; :class:`SwapJudgement` holds the figures and formats them (:meth:`SwapJudgement.summary`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._optim import Frozen
from .dlib_judge import DLIB_SAME_PERSON_THRESHOLD, dlib_descriptors, dlib_distance, dlib_landmarks, pose_proxy
from .errors import InputError, ShapeError, check_shape
from .identity import identity_crop

__all__ = ["SwapJudgement", "judge_swap", "swap_metrics_text", "batch_images", "broadcast_batch", "embed_faces"]


@dataclass(frozen=True, eq=False)
class SwapJudgement:
    """Output of :func:`judge_swap`; every field has one entry per result image.

    Attributes:
        id_to_source / id_to_target: cosine similarity (optimised identity network) of the
            result to the source / target; None without a network.
        id_target_to_source: the same between target and source (where the result started).
        id_moved: (id_to_source - id_target_to_source) / (1 - id_target_to_source): the share
            of the way from the target's identity to the source's (0 = not moved, 1 = reached).
        dlib_to_source / dlib_to_target / dlib_target_to_source: dlib descriptor distances
            (below :data:`~facelib.dlib_judge.DLIB_SAME_PERSON_THRESHOLD` = same person); None
            when the dlib part was off.
        dlib_same_as_source / dlib_same_as_target: the distances under the threshold.
        detected: per image {"result", "source", "target"}: whether dlib's detector found the
            face (False: the fixed FFHQ box was used and the dlib figures mean little).
        yaw / pitch, target_yaw / target_pitch: landmark pose proxies
            (:func:`~facelib.dlib_judge.pose_proxy`) of result and target.
        yaw_change / pitch_change: result minus target.
        threshold: the dlib threshold used.
    """

    id_to_source: np.ndarray | None
    id_to_target: np.ndarray | None
    id_target_to_source: np.ndarray | None
    id_moved: np.ndarray | None
    dlib_to_source: np.ndarray | None = None
    dlib_to_target: np.ndarray | None = None
    dlib_target_to_source: np.ndarray | None = None
    dlib_same_as_source: np.ndarray | None = None
    dlib_same_as_target: np.ndarray | None = None
    detected: tuple[dict[str, bool], ...] | None = None
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    target_yaw: np.ndarray | None = None
    target_pitch: np.ndarray | None = None
    yaw_change: np.ndarray | None = None
    pitch_change: np.ndarray | None = None
    threshold: float = 0.6

    def __len__(self) -> int:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                return len(v)
            if isinstance(v, tuple):
                return len(v)
        return 0

    def metrics(self, i: int) -> dict[str, Any]:
        """Image ``i``'s figures as a JSON-ready dict (fields that are None are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "threshold":
                continue
            if f.name == "detected":
                out["dlib_detected"] = dict(v[i])
            elif isinstance(v, np.ndarray):
                out[f.name] = bool(v[i]) if v.dtype == bool else float(v[i])
        if self.dlib_to_source is not None:
            out["dlib_threshold"] = float(self.threshold)
        return out

    def summary(self, i: int = 0) -> str:
        """One line for image ``i``: identity to source/target (network, dlib) and pose change
        (:func:`swap_metrics_text` of :meth:`metrics`)."""
        return swap_metrics_text(self.metrics(i))


def swap_metrics_text(m: Mapping[str, Any], *, unchanged: bool = False) -> str:
    """The one text of a swap's figures: ``m`` is one image's metrics (:attr:`SwapResult.metrics
    <facelib.swap.SwapResult>` entry, a saved JSON's, or :meth:`SwapJudgement.metrics`).

    ``id src 0.62 (was 0.31, moved 45%) tgt 0.71 | dlib src 0.52= tgt 0.47 | dyaw +0.02
    dpitch -0.01``: identity cosine (optimised network) to the source, before the swap and
    the share of the way moved, to the target; dlib distance to source (``=`` below dlib's
    same-person threshold, ``>`` above; "(no face)" when dlib used the fixed FFHQ box) and to the
    target; the pose change. Parts whose figures are absent are left out; ``unchanged`` (or
    ``m["unchanged"]``) puts "UNCHANGED: the swap did nothing (best step 0)" first. "" when ``m``
    holds none of these figures.
    """
    parts = ["UNCHANGED: the swap did nothing (best step 0)"] if unchanged or m.get("unchanged") is True else []
    if "id_to_source" in m:
        text = f"id src {m['id_to_source']:.2f}"
        if "id_target_to_source" in m:
            moved = f", moved {m['id_moved']:.0%}" if isinstance(m.get("id_moved"), (int, float)) else ""
            text += f" (was {m['id_target_to_source']:.2f}{moved})"
        if "id_to_target" in m:
            text += f" tgt {m['id_to_target']:.2f}"
        parts.append(text)
    if "dlib_to_source" in m:
        same = m.get("dlib_same_as_source")
        mark = "" if same is None else "=" if same else ">"
        det = m.get("dlib_detected") or {}
        parts.append(f"dlib src {m['dlib_to_source']:.2f}{mark}"
                     + (f" tgt {m['dlib_to_target']:.2f}" if "dlib_to_target" in m else "")
                     + ("" if all(det.values()) else " (no face)"))
    if "yaw_change" in m:
        pitch = f" dpitch {m['pitch_change']:+.2f}" if "pitch_change" in m else ""
        parts.append(f"dyaw {m['yaw_change']:+.2f}{pitch}")
    return " | ".join(parts)


def batch_images(x: Any, name: str) -> torch.Tensor:
    """``x`` as (N, 3, H, W) float images (a (3, H, W) image, a Projection or SwapResult give theirs).

    Raises:
        InputError / ShapeError: ``x`` (named ``name``) is not images.
    """
    if hasattr(x, "images") and hasattr(x, "wplus"):  # a Projection or SwapResult
        x = x.images
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a (N, 3, H, W) tensor in [-1, 1] or a Projection, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    check_shape(name, x, (None, 3, None, None))
    return x.detach().float()


def broadcast_batch(n: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor with a batch of ``n`` (a batch of 1 is expanded); ShapeError for other sizes."""
    out = []
    for t in tensors:
        if t.shape[0] == n:
            out.append(t)
        elif t.shape[0] == 1:
            out.append(t.expand(n, *t.shape[1:]))
        else:
            raise ShapeError(f"batch sizes do not match: {t.shape[0]} vs {n} (each side must be N or 1)",
                             actual_shape=t.shape, expected_shape=(n, *t.shape[1:]))
    return out


@torch.no_grad()
def embed_faces(id_net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, E) normalised CPU embeddings of (N, 3, H, W) images, with the network in eval mode."""
    dev = next(id_net.parameters()).device
    with Frozen(id_net):
        return F.normalize(id_net(identity_crop(images.to(dev).float())).float(), dim=1).cpu()


def judge_swap(result_images: Any, source_images: Any, target_images: Any, id_net: nn.Module | None, *,
               dlib: bool = True, size: int = 256) -> SwapJudgement:
    """Judge swap results: identity with the optimised network and with dlib, and pose vs the target.

    Args:
        result_images: (N, 3, H, W) float in [-1, 1], FFHQ-aligned (or a SwapResult / Projection).
        source_images: (N or 1, 3, H', W') in [-1, 1], the identity donors (any size).
        target_images: (N or 1, 3, H'', W'') in [-1, 1], what the results started from.
        id_net: the identity network the swap optimised ((N, 3, 112, 112) -> (N, E) normalised),
            or None to skip that part.
        dlib: also run dlib's face-recognition ResNet and the 68-point landmarks (pose).
        size: dlib works on copies resized to this side (256: an FFHQ face is then about
            150 px, the size of dlib's face chip; smaller generator outputs are upsampled).
    Returns:
        :class:`SwapJudgement`. Images where dlib's detector finds no face use the fixed FFHQ
        box and are marked in ``detected``.
    Raises:
        ShapeError / InputError: bad images; DependencyError: ``dlib=True`` without dlib.
    """
    res = batch_images(result_images, "result_images").cpu()
    src = batch_images(source_images, "source_images").cpu()
    tgt = batch_images(target_images, "target_images").cpu()
    n = res.shape[0]
    broadcast_batch(n, src, tgt)  # batch sizes must be N or 1
    fields: dict[str, Any] = {"id_to_source": None, "id_to_target": None, "id_target_to_source": None,
                              "id_moved": None}
    if id_net is not None:
        e_res, e_src, e_tgt = embed_faces(id_net, res), embed_faces(id_net, src), embed_faces(id_net, tgt)
        e_src, e_tgt = broadcast_batch(n, e_src, e_tgt)
        to_src = (e_res * e_src).sum(1).numpy().astype(np.float64)
        to_tgt = (e_res * e_tgt).sum(1).numpy().astype(np.float64)
        base = (e_tgt * e_src).sum(1).numpy().astype(np.float64)
        moved = (to_src - base) / np.maximum(1.0 - base, 1e-9)
        fields.update(id_to_source=to_src, id_to_target=to_tgt, id_target_to_source=base, id_moved=moved)
    if not dlib:
        return SwapJudgement(**fields)

    def resized(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(-1, 1)
        if x.shape[-2:] == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    r, s, t = resized(res), resized(src), resized(tgt)
    d_res, d_src, d_tgt = dlib_descriptors(r), dlib_descriptors(s), dlib_descriptors(t)
    if len(d_src) == 1 and n > 1:
        d_src = dataclasses.replace(d_src, descriptors=np.repeat(d_src.descriptors, n, 0),
                                    detected=d_src.detected * n, boxes=d_src.boxes * n)
    if len(d_tgt) == 1 and n > 1:
        d_tgt = dataclasses.replace(d_tgt, descriptors=np.repeat(d_tgt.descriptors, n, 0),
                                    detected=d_tgt.detected * n, boxes=d_tgt.boxes * n)
    to_src = dlib_distance(d_res, d_src)
    to_tgt = dlib_distance(d_res, d_tgt)
    base = dlib_distance(d_tgt, d_src)
    thr = float(DLIB_SAME_PERSON_THRESHOLD)
    lm_res = dlib_landmarks(r)
    lm_tgt = dlib_landmarks(t) if t.shape[0] == n else dlib_landmarks(t[:1].expand(n, -1, -1, -1))
    yaw, pitch = pose_proxy(lm_res)
    tyaw, tpitch = pose_proxy(lm_tgt)
    detected = tuple({"result": bool(d_res.detected[i]), "source": bool(d_src.detected[i]),
                      "target": bool(d_tgt.detected[i])} for i in range(n))
    fields.update(dlib_to_source=to_src, dlib_to_target=to_tgt, dlib_target_to_source=base,
                  dlib_same_as_source=to_src < thr, dlib_same_as_target=to_tgt < thr, detected=detected,
                  yaw=np.asarray(yaw, np.float64), pitch=np.asarray(pitch, np.float64),
                  target_yaw=np.asarray(tyaw, np.float64), target_pitch=np.asarray(tpitch, np.float64),
                  yaw_change=np.asarray(yaw, np.float64) - np.asarray(tyaw, np.float64),
                  pitch_change=np.asarray(pitch, np.float64) - np.asarray(tpitch, np.float64), threshold=thr)
    return SwapJudgement(**fields)
