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
    "convert_checkpoint": "nvidia_convert",
    # alignment
    "align_face": "align",
    "align_faces": "align",
    "align_folder": "align_batch",
    "AlignedFace": "align",
    "load_image": "align",
    "AlignFolderResult": "align_batch",
    "face_mask": "align",
    "dlib_model_path": "dlib_models",
    # projection
    "project": "projection",
    "Projection": "projection",
    "ProjectConfig": "projection",
    "load_projection": "projection",
    "project_folder": "projection_folder",
    "LPIPSLoss": "losses",
    # edits
    "mix_styles": "edits",
    "LayerMask": "edits",
    "expression_delta": "edits",
    "apply_delta": "edits",
    "row_effects": "row_measure",
    "RowEffects": "row_measure",
    "EXPRESSION_MASKS": "edits",
    "style_table": "tables",
    "expression_table": "tables",
    "load_latents": "latents",
    "save_latents": "latents",
    # identity
    "load_arcface": "identity",
    "identity_crop": "identity",
    "build_arcface": "identity",
    "detect_arcface_arch": "identity",
    "dlib_descriptors": "dlib_judge",
    "dlib_distance": "dlib_judge",
    "dlib_landmarks": "dlib_judge",
    "pose_proxy": "dlib_judge",
    "DLIB_SAME_PERSON_THRESHOLD": "dlib_judge",
    "face_swap": "swap",
    "SwapResult": "swap",
    "SwapConfig": "swap",
    "judge_swap": "swap_judge",
    "load_swap": "swap",
    # data, notebooks, report
    "locate": "data",
    "DataInventory": "data",
    "notebook_setup": "session",
    "run_series": "pipeline",
    "build_report": "report",
    # grids
    "to_pil": "grids",
    "make_grid": "grids",
    # pSp / e4e encoders and the projection quality card
    "load_encoder": "encoders",
    "StyleEncoder": "encoders",
    "EncoderSpec": "encoders",
    "quality_card": "quality",
    "QualityCard": "quality",
    "PUBLISHED_INVERSION": "quality",
    # the user's own material: emotion names of photo files, reference inputs, the kernel check
    "emotion_label": "data",
    "expression_photos": "edit_inputs",
    "aligned_dir": "edit_inputs",
    "check_kernel": "kernel",
    "missing_packages": "kernel",
    # edit directions (SeFa, InterFaceGAN, GANSpace) and the attributes that label them
    "Direction": "directions",
    "Directions": "directions",
    "sefa_directions": "directions",
    "pca_directions": "directions",
    "fit_direction": "directions",
    "conditional_direction": "directions",
    "label_latents": "attributes",
    "latents_with_scores": "attributes",
    "apply_direction": "directions",
    "direction_strip": "directions",
    "load_directions": "directions",
    "find_directions": "direction_views",
    "directions_for": "direction_views",
    "measure_attributes": "attributes",
    "landmark_attributes": "attributes",
    "read_scores": "attributes",
    # memory estimates and batch sizes; interrupted batch commands
    "projection_bytes": "memory",
    "free_bytes": "memory",
    "plan_batch": "memory",
    "BatchPlan": "memory",
    "BatchInterrupted": "errors",
    "MemoryLimitError": "errors",
    # pivotal tuning
    "tune_generator": "tuning",
    "Tuning": "tuning",
    "TuneConfig": "tuning",
    "load_tuning": "tuning",
    "tune_folder": "tuning",
    "attach_tuning": "tuning",
    "load_tuned_projection": "tuning",
    "paste_into_photo": "paste",
    # runs over several processes (torchrun); the helpers live in facelib.distributed
    "DistInfo": "distributed",
    # W+ input checks, named latent sets and the preview base class shared by the edit modules
    "as_wplus": "edits",
    "check_strength": "edits",
    "LatentSet": "latents",
    "gather_latents": "latents",
    "latents_for": "latents",
    "Preview": "previews",
    # a swap's saved images and its figures as text; the loss history of an optimisation
    "save_swaps": "swap",
    "swap_metrics_text": "swap_judge",
    "loss_history_figure": "plots",
    # reruns with other settings write beside finished results (<folder>@<tag>)
    "beside_folder": "variants",
    "settings_tag": "variants",
    "swap_folder": "swap_pairs",
    # a torchrun launch stopped as a whole (one rank interrupted, or gone)
    "LaunchError": "errors",
    "Exchange": "distributed",
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
