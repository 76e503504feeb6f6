"""facelib: edit real face photos with a pretrained StyleGAN2.

Public names are imported lazily (on first attribute access), so ``import facelib`` stays
cheap and an optional dependency (dlib, lpips, ipywidgets) is only needed by the functions
that use it.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (AlignmentError, CheckpointError, DependencyError, FacelibError,
                     InputError, MultipleFacesError, NoFaceError, OptimisationError,
                     RangeError, ShapeError)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    # generator and weights
    "StyleGAN2Generator": "stylegan2",
    "load_generator": "weights",
    "save_generator": "weights",
    "file_sha256": "weights",
    "load_nvidia_pickle": "nvidia",
    "convert_checkpoint": "nvidia",
    # alignment
    "align_face": "align",
    "align_faces": "align",
    "align_folder": "align",
    "AlignedFace": "align",
    "load_image": "align",
    "AlignFolderResult": "align",
    "face_mask": "align",
    "dlib_model_path": "align",
    # projection
    "project": "project",
    "Projection": "project",
    "ProjectConfig": "project",
    "load_projection": "project",
    "project_folder": "project",
    "LPIPSLoss": "losses",
    # edits
    "mix_styles": "edits",
    "LayerMask": "edits",
    "expression_delta": "edits",
    "apply_delta": "edits",
    "row_effects": "edits",
    "RowEffects": "edits",
    "EXPRESSION_MASKS": "edits",
    "style_table": "edits",
    "expression_table": "edits",
    "load_latents": "edits",
    "save_latents": "edits",
    # identity
    "load_arcface": "identity",
    "identity_crop": "identity",
    "build_arcface": "identity",
    "detect_arcface_arch": "identity",
    "dlib_descriptors": "identity",
    "dlib_distance": "identity",
    "dlib_landmarks": "identity",
    "pose_proxy": "identity",
    "DLIB_SAME_PERSON_THRESHOLD": "identity",
    "face_swap": "swap",
    "SwapResult": "swap",
    "SwapConfig": "swap",
    "judge_swap": "swap",
    "load_swap": "swap",
    # data, notebooks, report
    "locate": "data",
    "DataInventory": "data",
    "notebook_setup": "data",
    "run_series": "pipeline",
    "build_report": "report",
    # grids
    "to_pil": "grids",
    "make_grid": "grids",
    # runs over several processes (torchrun); the helpers live in facelib.distributed
    "DistInfo": "distributed",
}

__all__ = sorted(set(_LAZY) | {
    "FacelibError", "InputError", "ShapeError", "RangeError", "CheckpointError",
    "AlignmentError", "NoFaceError", "MultipleFacesError", "DependencyError",
    "OptimisationError", "__version__"})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facelib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
