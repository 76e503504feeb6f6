"""Finding inputs (photos and weight files), fetching the Kaggle datasets, notebook setup.

:func:`locate` searches ``$FACELIB_DATA``, ``./data/`` (and the repository's ``data/``) and,
on Kaggle, every attached dataset under ``/kaggle/input/``, and sorts what it finds into
StyleGAN2 generators, ArcFace networks, dlib models, VGG16 weights (for LPIPS) and photo
folders. Weight files are recognised by their **content**, never by their names:

* ``torch.save`` zip files (the format of every current ``.pt``/``.pth``): only the small
  ``<archive>/data.pkl`` member is read, with a restricted unpickler that knows a dozen
  names (tensor rebuild functions, storage types, ``OrderedDict``) and turns tensors into
  shape-only stand-ins. Tensor data is never read and no code from the file runs, so
  classifying a 350 MB generator takes milliseconds, where ``torch.load`` would read it all.
  Legacy (pre-1.6) ``torch.save`` files are read the same way: their object pickle comes
  before the tensor bytes.
* NVIDIA network pickles (``.pkl``): recognised by the ``torch_utils.persistence``
  reconstructor name near the start of the file, without unpickling anything.
* dlib ``.dat`` models: dlib's own serialisation starts with a version number followed by
  either the loss-layer name of a DNN (``loss_mmod_`` = CNN face detector, ``loss_metric_``
  = face-recognition ResNet) or the mean shape of a shape predictor (136 values = 68
  landmarks, 10 = 5 landmarks).
* HTML pages, empty files and compressed downloads that stand where a weight file should be
  are reported as problems.

:func:`download` fetches the five Kaggle datasets behind the original report with Kaggle's
own clients (``kagglehub``, else the ``kaggle`` package) and records every file's size and
SHA-256 in ``data/MANIFEST.json``.

:func:`notebook_setup` is what each notebook calls after its parameters cell: device, the
generator (real, or the small untrained one of a smoke run), labels for smoke-run images.
"""
from __future__ import annotations

import bz2
import datetime as _dt
import glob
import importlib.util
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._io import atomic_path, jsonable
from .errors import CheckpointError, DependencyError, InputError

__all__ = [
    "KAGGLE_DATASETS",
    "SMOKE_STAMP",
    "SMOKE_HINT",
    "REAL_WEIGHTS_HELP",
    "FoundFile",
    "ImageFolder",
    "Problem",
    "SearchRoot",
    "DataInventory",
    "default_roots",
    "locate",
    "classify_file",
    "read_torch_metadata",
    "TensorMeta",
    "kaggle_credentials",
    "DownloadResult",
    "download",
    "verify_manifest",
    "NotebookSetup",
    "notebook_setup",
    "smoke_generator",
    "repo_root",
]

log = logging.getLogger(__name__)

#: The Kaggle datasets behind the original report (owner/slug).
KAGGLE_DATASETS: tuple[str, ...] = (
    "sirtimio/arcface-weights",
    "sirtimio/aligned-data",
    "sirtimio/bad-trip-styles",
    "sirtimio/styles-expressions",
    "sirtimio/style-gan-data",
)

#: Text stamped on every image produced with the untrained generator.
SMOKE_STAMP = "UNTRAINED GENERATOR - SMOKE RUN (not a real result)"
#: Stamp for images made from random stand-in latents because an earlier step's results were missing.
STAND_IN_STAMP = "STAND-IN INPUTS (random latents, not projections) - not a real result"

#: The short form of :data:`REAL_WEIGHTS_HELP` that goes under the stamp on smoke-run grids.
SMOKE_HINT = ("for real results put a StyleGAN2 FFHQ .pt/.pkl under data/ (or $FACELIB_DATA, or attach it on "
              "Kaggle); see `python -m facelib data status`")

#: How to turn a smoke run into a real one.
REAL_WEIGHTS_HELP = (
    "To get real results, attach a pretrained StyleGAN2 FFHQ generator: a rosinality .pt "
    "(e.g. stylegan2-ffhq-config-f.pt) or an NVIDIA stylegan2-ada-pytorch .pkl (e.g. ffhq.pkl). "
    "Put it anywhere under data/ (or a folder named by $FACELIB_DATA; on Kaggle attach the dataset "
    "sirtimio/style-gan-data), or fetch the report's datasets with `python -m facelib data download`. "
    "Face swap also needs ArcFace weights (sirtimio/arcface-weights) and projection uses LPIPS with "
    "torchvision's VGG16 weights (vgg16-397923af.pth). `python -m facelib data status` shows what was found.")

_TEXT_EXTENSIONS = (".md", ".txt", ".json", ".csv", ".yaml", ".yml", ".py", ".ipynb", ".html", ".htm",
                    ".cfg", ".toml", ".ini", ".log", ".tsv", ".xml", ".sh", ".rst")
_WEIGHT_EXTENSIONS = (".pt", ".pth", ".pkl", ".pickle", ".dat", ".bin", ".ckpt", ".tar", ".model", "")
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", ".venv", "venv", "node_modules"}
_MAX_DEPTH = 6
_DATA_PKL_LIMIT = 64 << 20        # a data.pkl larger than this is not a state dict worth scanning
_NVIDIA_SCAN = 8 << 20            # bytes of a .pkl searched for the persistence marker

# dlib models as released (face_recognition_models 0.3.0 / dlib.net), by what their header says.
_DLIB_MODELS = {
    "shape_predictor_68": ("shape_predictor_68_face_landmarks.dat", 99693937,
                           "68-point landmark predictor (alignment)"),
    "shape_predictor_5": ("shape_predictor_5_face_landmarks.dat", 9150489, "5-point landmark predictor"),
    "mmod_detector": ("mmod_human_face_detector.dat", 729940, "CNN (MMOD) face detector"),
    "face_recognition": ("dlib_face_recognition_resnet_model_v1.dat", 22466066,
                         "face-recognition ResNet (128-d descriptors)"),
}

# torchvision VGG16: conv layers inside `features`, linear layers inside `classifier`
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG16_FCS = (0, 3, 6)


def repo_root() -> Path:
    """The folder holding the ``facelib`` package (the repository root of a clone)."""
    return Path(__file__).resolve().parents[1]


# ========================================================================================
# Results
# ========================================================================================

@dataclass(frozen=True)
class FoundFile:
    """A recognised weight file.

    Attributes:
        path: where it is.
        kind: "generator", "arcface", "dlib" or "vgg16".
        format: e.g. "rosinality" (``{"g_ema", "latent_avg"}``), "rosinality-training",
            "state-dict", "nvidia-pickle", "psp-encoder" / "e4e-encoder" (an encoder checkpoint and its
            decoder); the ArcFace architecture ("iresnet50", "ir_se50");
            the dlib model ("shape_predictor_68", "shape_predictor_5", "mmod_detector",
            "face_recognition"); "torchvision" for VGG16.
        detail: a human-readable description (resolution, what it is used for, ...).
        size: bytes.
        canonical_name: the file name facelib and the reference code know it by (dlib models:
            pass ``path`` explicitly when the names differ).
    """

    path: Path
    kind: str
    format: str
    detail: str
    size: int
    canonical_name: str | None = None


@dataclass(frozen=True)
class ImageFolder:
    """A folder that directly holds photos; ``role`` is guessed from its path
    ("faces", "aligned", "styles" or "expressions")."""

    path: Path
    n_images: int
    role: str


@dataclass(frozen=True)
class Problem:
    """A file that stands where a weight file should be but is not usable."""

    path: Path
    problem: str


@dataclass(frozen=True)
class SearchRoot:
    """One place :func:`locate` looked: ``source`` says why ("$FACELIB_DATA", "kaggle", "data", "package")."""

    path: Path
    source: str
    exists: bool


@dataclass(frozen=True)
class DataInventory:
    """Everything :func:`locate` found, and where it looked.

    Attributes:
        generators / arcface / dlib / vgg16: recognised weight files, in search order.
        image_folders: folders holding photos.
        unrecognised: binary files that are none of the above, with what they look like.
        problems: HTML pages, empty or compressed files where weights were expected.
        searched: the roots, in order.
    """

    generators: tuple[FoundFile, ...] = ()
    arcface: tuple[FoundFile, ...] = ()
    dlib: tuple[FoundFile, ...] = ()
    vgg16: tuple[FoundFile, ...] = ()
    image_folders: tuple[ImageFolder, ...] = ()
    unrecognised: tuple[Problem, ...] = ()
    problems: tuple[Problem, ...] = ()
    searched: tuple[SearchRoot, ...] = ()

    _KINDS = {"generator": "generators", "arcface": "arcface", "dlib": "dlib", "vgg16": "vgg16"}
    _WHAT = {
        "generator": "a StyleGAN2 generator (rosinality .pt or NVIDIA stylegan2-ada-pytorch .pkl)",
        "arcface": "ArcFace identity-network weights (insightface backbone.pth or pSp model_ir_se50.pth)",
        "dlib": "a dlib model file",
        "vgg16": "torchvision VGG16 weights (vgg16-397923af.pth) for LPIPS",
    }

    def found(self, kind: str, format: str | None = None) -> tuple[FoundFile, ...]:
        """Files of one kind ("generator", "arcface", "dlib", "vgg16"), optionally one format."""
        if kind not in self._KINDS:
            raise InputError(f"kind: expected one of {sorted(self._KINDS)}, got {kind!r}")
        files = getattr(self, self._KINDS[kind])
        return tuple(f for f in files if format is None or f.format == format)

    def first(self, kind: str, format: str | None = None) -> FoundFile | None:
        """The first file of a kind (and format), or None."""
        files = self.found(kind, format)
        return files[0] if files else None

    def require(self, kind: str, format: str | None = None) -> FoundFile:
        """Like :meth:`first`, but a missing file raises an error naming what and where.

        Raises:
            DependencyError: nothing of that kind was found; the message lists the folders
                searched and how to get the file.
        """
        f = self.first(kind, format)
        if f is not None:
            return f
        what = self._WHAT[kind] + (f" ({format})" if format else "")
        raise DependencyError(f"missing {what}; {self.where_looked()}. {self.hint(kind)}")

    def where_looked(self) -> str:
        """One sentence listing the searched folders (and which did not exist)."""
        parts = [f"{r.path}{'' if r.exists else ' (absent)'}" for r in self.searched]
        return "looked in " + (", ".join(parts) if parts else "no folders")

    def hint(self, kind: str) -> str:
        """What to do when a kind of file is missing."""
        bad = self.problems
        extra = (" Unusable files seen: " + "; ".join(f"{p.path}: {p.problem}" for p in bad[:3]) + ".") if bad else ""
        if kind == "generator":
            return REAL_WEIGHTS_HELP + extra
        if kind == "arcface":
            return ("Put the file under data/ or attach the Kaggle dataset sirtimio/arcface-weights "
                    "(`python -m facelib data download`)." + extra)
        if kind == "vgg16":
            return ("Put the file under data/ or in ~/.cache/torch/hub/checkpoints/; on a machine with internet: "
                    "python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"." + extra)
        return "Install the face_recognition_models package or put the .dat file under data/." + extra

    def summary(self) -> str:
        """A readable multi-line report (what ``python -m facelib data status`` prints)."""
        lines = ["searched:"]
        for r in self.searched:
            lines.append(f"  {r.path}  [{r.source}]{'' if r.exists else '  (absent)'}")
        for kind in ("generator", "arcface", "vgg16", "dlib"):
            files = self.found(kind)
            lines.append(f"{kind}: {len(files) if files else 'none found'}")
            for f in files:
                alias = (f"  (known as {f.canonical_name})"
                         if f.canonical_name and f.path.name != f.canonical_name else "")
                lines.append(f"  {f.path}  {f.format}: {f.detail}, {_human(f.size)}{alias}")
        lines.append(f"photo folders: {len(self.image_folders) if self.image_folders else 'none found'}")
        for d in self.image_folders:
            lines.append(f"  {d.path}  {d.n_images} image(s), role {d.role}")
        if self.problems:
            lines.append(f"problems: {len(self.problems)}")
            lines.extend(f"  {p.path}: {p.problem}" for p in self.problems)
        if self.unrecognised:
            lines.append(f"unrecognised: {len(self.unrecognised)}")
            lines.extend(f"  {p.path}: {p.problem}" for p in self.unrecognised)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        return jsonable(self)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# ========================================================================================
# Reading torch files without loading them
# ========================================================================================

@dataclass(frozen=True)
class TensorMeta:
    """Stand-in for a tensor found in a ``torch.save`` pickle: its shape and storage type only."""

    shape: tuple[int, ...]
    dtype: str = "?"

    def dim(self) -> int:
        return len(self.shape)


class _Opaque:
    """Stand-in for an allowed non-tensor object (argparse.Namespace, numpy scalars, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StateDict(dict):
    """``collections.OrderedDict`` stand-in; ``state_dict()`` pickles carry a ``_metadata`` attribute."""

    def __setstate__(self, state: Any) -> None:
        self.metadata = state


def _opaque(*args: Any, **kwargs: Any) -> _Opaque:
    return _Opaque()


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any = None, *args: Any) -> TensorMeta:
    dtype = storage if isinstance(storage, str) else "?"
    return TensorMeta(tuple(int(s) for s in size), dtype)


def _rebuild_parameter(data: Any, *args: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, type_: Any, args: Any, state: Any = None) -> Any:
    return func(*args) if callable(func) else _Opaque()


class _MetaUnpickler(pickle.Unpickler):
    """Restricted unpickler: builds dicts/lists/scalars and :class:`TensorMeta`; refuses the rest."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Size"): tuple,
        ("argparse", "Namespace"): _Opaque,
        ("torch", "device"): _opaque,
        ("numpy.core.multiarray", "scalar"): _opaque,
        ("numpy._core.multiarray", "scalar"): _opaque,
        ("numpy", "dtype"): _opaque,
        ("_codecs", "encode"): _opaque,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return name  # a storage type: keep its name as the dtype tag
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in ("float32", "float16", "bfloat16", "float64", "int64", "uint8"):
            return name
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        # zip format: ('storage', storage_type, key, location, numel); legacy adds view metadata
        if isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 2:
            return pid[1] if isinstance(pid[1], str) else "?"
        return "?"


def read_torch_metadata(path: "str | os.PathLike[str]") -> Any:
    """The object structure of a ``torch.save`` file, with :class:`TensorMeta` leaves.

    Reads only the pickle part (zip member ``<archive>/data.pkl``, or the object pickle at
    the start of a legacy file); tensor bytes are never read and nothing from the file is
    executed. Use it to see what a checkpoint holds without loading it.

    Raises:
        CheckpointError: not a torch file, truncated, or containing objects outside the
            small allow-list (see :class:`_MetaUnpickler`).
    """
    path = Path(path)
    from .weights import sniff_file

    kind = sniff_file(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
                if not names:
                    raise CheckpointError(path, "a zip file without <archive>/data.pkl: not a torch.save file")
                info = zf.getinfo(names[0])
                if info.file_size > _DATA_PKL_LIMIT:
                    raise CheckpointError(path, f"data.pkl is {_human(info.file_size)}: too large to be a state dict")
                blob = zf.read(info)
            return _MetaUnpickler(io.BytesIO(blob)).load()
        if kind == "torch-legacy":
            with open(path, "rb") as f:
                up = _MetaUnpickler(f)
                up.load()                 # magic number
                up.load()                 # protocol version
                up.load()                 # sys info
                return _MetaUnpickler(f).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError, RecursionError) as e:
        raise CheckpointError(path, f"cannot be read as a torch file: {type(e).__name__}: {e}") from None
    raise CheckpointError(path, f"not a torch.save file (the header looks like {kind!r})")


# ========================================================================================
# Classification
# ========================================================================================

def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state)
    while out and all(isinstance(k, str) and k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def _is_meta_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, TensorMeta) for k, v in obj.items())


def _generator_detail(state: Mapping[str, Any]) -> str:
    n_rgbs = 0
    while f"to_rgbs.{n_rgbs}.conv.weight" in state:
        n_rgbs += 1
    res = 2 ** (n_rgbs + 2)
    style = state.get("style.1.weight")
    dim = style.shape[-1] if isinstance(style, TensorMeta) and style.shape else "?"
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    return f"StyleGAN2 {res} px, style_dim {dim}, {n_mlp} mapping layers, {2 * (n_rgbs + 2) - 2} W+ rows"


def _classify_generator(obj: Any) -> tuple[str, str] | None:
    from .weights import _looks_like_generator  # the key test load_generator uses

    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("g_ema"), Mapping):
        state = _strip_module(obj["g_ema"])
        if _looks_like_generator(state):
            fmt = "rosinality-training" if "d" in obj or "g_optim" in obj else "rosinality"
            extra = "" if "latent_avg" in obj else " (no latent_avg: estimated from the mapping when loaded)"
            return fmt, _generator_detail(state) + extra
    if isinstance(obj.get("g"), Mapping):
        state = _strip_module(obj["g"])
        if _looks_like_generator(state):
            return "rosinality-training", _generator_detail(state) + " (training generator 'g' only)"
    if _is_meta_state(obj):
        state = _strip_module(obj)
        if _looks_like_generator(state):
            return "state-dict", _generator_detail(state) + " (bare g_ema state dict)"
    if isinstance(obj.get("state_dict"), Mapping):  # pSp / e4e encoder: its decoder is a generator
        from .encoders import describe_encoder_checkpoint

        hit = describe_encoder_checkpoint(obj)
        state = {k[len("decoder."):]: v for k, v in _strip_module(obj["state_dict"]).items()
                 if isinstance(k, str) and k.startswith("decoder.")}
        if hit is not None and _looks_like_generator(state):
            return hit[0], f"{hit[1]} ({_generator_detail(state)})"
    return None


def _arcface_state(obj: Any) -> dict[str, Any] | None:
    if _is_meta_state(obj):
        return _strip_module(obj)
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "backbone"):
            if _is_meta_state(obj.get(wrapper)):
                return _strip_module(obj[wrapper])
    return None


def _arcface_arch_by_keys(sd: Mapping[str, Any]) -> str | None:
    """Key heuristics (used when facelib.identity is unavailable)."""
    if all(k in sd for k in ("conv1.weight", "fc.weight", "features.running_var", "layer1.0.conv1.weight")):
        n3 = len({k.split(".")[1] for k in sd if k.startswith("layer3.") and k.endswith(".conv1.weight")})
        return {2: "iresnet18", 6: "iresnet34", 14: "iresnet50", 30: "iresnet100", 60: "iresnet200"}.get(
            n3, "iresnet")
    if all(k in sd for k in ("input_layer.0.weight", "output_layer.3.weight")):
        se = any(".res_layer.5.fc1.weight" in k for k in sd)
        n = len({k.split(".")[1] for k in sd if k.startswith("body.") and ".res_layer.1.weight" in k})
        depth = {24: "50", 49: "100", 50: "152"}.get(n, "")
        return ("ir_se" if se else "ir") + depth
    return None


def _classify_arcface(obj: Any) -> tuple[str, str] | None:
    sd = _arcface_state(obj)
    if sd is None:
        return None
    arch = None
    try:
        from .identity import detect_arcface_arch
    except ImportError:  # identity.py unavailable: fall back to key names
        arch = _arcface_arch_by_keys(sd)
    else:
        try:
            arch = detect_arcface_arch(sd)
        except Exception as e:  # a shape-only stand-in it could not read: use the key names
            log.debug("detect_arcface_arch failed on stand-ins (%s); using key heuristics", e)
            arch = _arcface_arch_by_keys(sd)
    if arch is None:
        return None
    family = "insightface arcface_torch IResNet" if arch.startswith("iresnet") else "pSp/TreB1eN IR backbone"
    return arch, f"ArcFace {arch} ({family}, {len(sd)} tensors)"


def _classify_vgg16(obj: Any) -> tuple[str, str] | None:
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not _is_meta_state(sd):
        return None
    sd = _strip_module(sd)
    convs = {int(k.split(".")[1]) for k in sd if k.startswith("features.") and k.endswith(".weight")}
    fcs = {int(k.split(".")[1]) for k in sd if k.startswith("classifier.") and k.endswith(".weight")}
    if convs != set(_VGG16_CONVS) or any("running_mean" in k for k in sd):
        return None
    first = sd.get("features.0.weight")
    if not (isinstance(first, TensorMeta) and first.shape == (64, 3, 3, 3)):
        return None
    head = "with classifier" if fcs == set(_VGG16_FCS) else "features only"
    return "torchvision", f"VGG16 ({head}; LPIPS uses the 13 conv layers)"


def _describe_meta(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:5]]
        return f"a torch file holding a dict with keys {keys}{' ...' if len(obj) > 5 else ''}"
    return f"a torch file holding a {type(obj).__name__}"


def _dlib_int(buf: bytes, pos: int) -> tuple[int, int]:
    """One dlib-serialised integer at ``pos``: (value, next position)."""
    if pos >= len(buf):
        raise ValueError("end of buffer")
    control = buf[pos]
    size = control & 0x0F
    if control & 0x70 or size > 8 or pos + 1 + size > len(buf):
        raise ValueError("not a dlib integer")
    value = int.from_bytes(buf[pos + 1:pos + 1 + size], "little")
    return (-value if control & 0x80 else value), pos + 1 + size


def _dlib_header(head: bytes) -> tuple[str, str] | None:
    """(format, detail) of a dlib model from its first bytes, or None."""
    try:
        version, pos = _dlib_int(head, 0)
        if version != 1:
            return None
        n, p = _dlib_int(head, pos)
        if 0 < n <= 64 and head[p:p + 5] == b"loss_":  # DNN: loss layer name
            name = head[p:p + n].decode("ascii", "replace")
            if name.startswith("loss_mmod"):
                return "mmod_detector", name
            if name.startswith("loss_metric"):
                return "face_recognition", name
            return "dnn", f"dlib DNN ({name})"
        rows, p = _dlib_int(head, pos)
        cols, p = _dlib_int(head, p)
        # shape predictor: the mean shape, a (-2K) x (-1) matrix (negative sizes = column-major tag)
        if rows < 0 and cols == -1 and -rows % 2 == 0 and 2 <= -rows <= 1000:
            k = -rows // 2
            values = []
            for _ in range(min(-rows, 40)):
                mant, p = _dlib_int(head, p)
                exp, p = _dlib_int(head, p)
                values.append(mant * 2.0 ** exp)
            if all(-1.0 <= v <= 2.0 for v in values):
                return f"shape_predictor_{k}", f"{k} landmarks"
    except (ValueError, OverflowError):
        return None
    return None


def _classify_dlib(path: Path, head: bytes, size: int) -> FoundFile | None:
    found = _dlib_header(head)
    if found is None:
        return None
    fmt, extra = found
    canonical, released, what = _DLIB_MODELS.get(fmt, (None, None, f"dlib model ({extra})"))
    note = "" if released is None else (", same size as the released file" if size == released
                                        else f", size differs from the released file ({released} bytes)")
    return FoundFile(path, "dlib", fmt, f"dlib {what}{note}", size, canonical)


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


_ARCHIVE_MAGIC = ((b"\x1f\x8b", "gzip", (".tar.gz", ".tgz"), "tar -xzf", "gunzip -k"),
                  (b"\xfd7zXZ\x00", "xz", (".tar.xz", ".txz"), "tar -xJf", "unxz -k"),
                  (b"7z\xbc\xaf\x27\x1c", "7-Zip", (), "", "7z x"),
                  (b"Rar!\x1a\x07", "RAR", (), "", "unrar x"),
                  (b"(\xb5/\xfd", "zstd", (".tar.zst",), "tar --zstd -xf", "unzstd"))


def _archive_problem(path: Path, head: bytes) -> Problem | None:
    """A still-packed download (gzip, xz, 7-Zip, RAR, zstd, tar), with the command that unpacks it; else None.

    bz2 and zip are handled by :func:`classify_file` itself (a bz2 dlib model is named as such; a
    zip may be a ``torch.save`` file).
    """
    name = path.name.lower()
    for magic, what, tar_suffixes, tar_cmd, cmd in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            how = tar_cmd if name.endswith(tar_suffixes) and tar_suffixes else cmd
            return Problem(path, f"a {what}-compressed file (a download not unpacked yet): "
                                 f"unpack it first: {how} '{path.name}'")
    if len(head) >= 262 and head[257:262] == b"ustar":
        return Problem(path, f"a tar archive (a download not unpacked yet): unpack it first: tar -xf '{path.name}'")
    return None


def _nvidia_detail(head: bytes) -> str:
    """Resolution and W+ rows read from an NVIDIA network pickle's constructor arguments.

    The pickle's opcodes are walked with :mod:`pickletools` (nothing is unpickled); the first
    ``img_resolution`` / ``num_ws`` / ``w_dim`` values (the generator's) are taken, ``num_ws``
    computed from the resolution when absent. Returns "" when the head holds none of them.
    """
    import pickletools

    wanted = {"img_resolution": None, "num_ws": None, "w_dim": None}
    pending: str | None = None
    try:
        for op, arg, _pos in pickletools.genops(head):
            if isinstance(arg, str) and arg in wanted and wanted[arg] is None:
                pending = arg
            elif pending is not None and op.name in ("BINPUT", "LONG_BINPUT", "MEMOIZE", "PUT"):
                continue
            elif pending is not None:
                if op.name in ("BININT", "BININT1", "BININT2", "INT", "LONG1") and isinstance(arg, int):
                    wanted[pending] = int(arg)
                pending = None
            if all(v is not None for v in wanted.values()):
                break
    except Exception:  # noqa: BLE001  the head ends mid-opcode (or is not a pickle): keep what was read
        pass
    res = wanted["img_resolution"]
    if not res:
        return ""
    rows = wanted["num_ws"] or (2 * int(math.log2(res)) - 2 if res & (res - 1) == 0 and res >= 4 else None)
    parts = [f"{res} px"]
    if rows:
        parts.append(f"{rows} W+ rows")
    if wanted["w_dim"]:
        parts.append(f"style dim {wanted['w_dim']}")
    return ", ".join(parts)


def classify_file(path: "str | os.PathLike[str]") -> FoundFile | Problem | None:
    """Recognise one file by its content.

    Returns:
        A :class:`FoundFile` for a generator / ArcFace / dlib / VGG16 file; a :class:`Problem`
        for a file that cannot be used (HTML page, empty, truncated, compressed, a foreign
        pickle or torch file); None for files that are plainly something else (text, images).
        The file name plays no part (except to skip photos and text files by extension).
    """
    from .align import IMAGE_EXTENSIONS
    from .weights import sniff_file

    path = Path(path)
    size = path.stat().st_size
    suffix = path.suffix.lower()
    weightish = suffix in _WEIGHT_EXTENSIONS
    if suffix in IMAGE_EXTENSIONS:
        return None
    packed = _archive_problem(path, _read_head(path, 512))
    if packed is not None:
        return packed
    kind = sniff_file(path)
    if kind == "empty":
        return Problem(path, "empty file (an interrupted download?)") if weightish else None
    if kind == "html":
        return (Problem(path, "an HTML page, not weights (a download that returned an error or sign-in page); "
                              "download it again") if weightish or suffix not in _TEXT_EXTENSIONS else None)
    if kind == "text":  # dlib headers are control bytes + ASCII: a short model can pass as text
        return _classify_dlib(path, _read_head(path, 4096), size)
    if kind in ("zip", "torch-legacy"):
        try:
            obj = read_torch_metadata(path)
        except CheckpointError as e:
            if kind == "zip" and "data.pkl" in e.problem and "without" in e.problem:
                try:
                    with zipfile.ZipFile(path) as zf:
                        npz = any(n.endswith(".npy") for n in zf.namelist())
                except zipfile.BadZipFile:
                    npz = False
                return Problem(path, "a NumPy .npz file of arrays" if npz else
                               f"a zip archive that is not a torch.save file (a download not unpacked yet): "
                               f"unpack it first: unzip '{path.name}'")
            return Problem(path, e.problem)
        for kind_name, test in (("generator", _classify_generator), ("arcface", _classify_arcface),
                                ("vgg16", _classify_vgg16)):
            hit = test(obj)
            if hit is not None:
                return FoundFile(path, kind_name, hit[0], hit[1], size)
        return Problem(path, _describe_meta(obj))
    if kind == "pickle":
        head = _read_head(path, _NVIDIA_SCAN)
        if b"torch_utils.persistence" in head and b"_reconstruct_persistent_obj" in head:
            if b"G_ema" in head or b"synthesis" in head:
                shape = _nvidia_detail(head)
                return FoundFile(path, "generator", "nvidia-pickle",
                                 (f"{shape}, " if shape else "") + "NVIDIA stylegan2-ada-pytorch network pickle"
                                 + (" (G_ema)" if b"G_ema" in head else " (no G_ema: the training generator G)"),
                                 size)
            return Problem(path, "an NVIDIA persistence pickle without a generator")
        if b"dnnlib.tflib" in head:
            return Problem(path, "a TensorFlow-era StyleGAN pickle; convert it first (rosinality "
                                 "convert_weight.py or stylegan2-ada-pytorch legacy.py)")
        return Problem(path, "a Python pickle of unknown content (facelib never unpickles it)")
    head = _read_head(path, 4096)
    if head.startswith(b"BZh"):
        try:
            inner = bz2.BZ2Decompressor().decompress(_read_head(path, 1 << 20))[:4096]
        except (OSError, ValueError):
            inner = b""
        dl = _dlib_header(inner)
        what = f"a bz2-compressed dlib model ({dl[0]})" if dl else "a bz2-compressed file"
        return Problem(path, f"{what}: decompress it first (bunzip2 -k '{path.name}')")
    found = _classify_dlib(path, head, size)
    if found is not None:
        return found
    return Problem(path, "binary file of unknown format") if weightish else None


# ========================================================================================
# Searching
# ========================================================================================

def package_models_dir() -> Path | None:
    """``face_recognition_models/models`` (dlib models), located without importing the package.

    Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        models = Path(loc) / "models"
        if models.is_dir():
            return models
    return None


def _env_dirs() -> list[Path]:
    """The folders named by ``$FACELIB_DATA`` (``os.pathsep``-separated)."""
    return [Path(e).expanduser() for e in os.environ.get("FACELIB_DATA", "").split(os.pathsep) if e]


def _kaggle_dirs(levels: int = 1) -> list[Path]:
    """Kaggle datasets (``/kaggle/input/<dataset>``) and, with ``levels`` > 1, the folders below, level by level."""
    return [Path(p) for k in range(1, levels + 1) for p in sorted(glob.glob("/kaggle/input" + "/*" * k))
            if os.path.isdir(p)]


def search_dirs(*, extra: Sequence["str | os.PathLike[str]"] = (), package_models: bool = True) -> list[Path]:
    """Folders searched for a weight file by name, in order, without duplicates.

    ``$FACELIB_DATA`` (``os.pathsep``-separated), Kaggle datasets (``/kaggle/input/<dataset>/``
    and up to two levels below, where datasets often nest their files), ``./data``, the
    repository's ``data/``, then ``extra``, then the ``face_recognition_models`` models folder.
    """
    dirs = [*_env_dirs(), *_kaggle_dirs(3), Path.cwd() / "data", repo_root() / "data",
            *(Path(e).expanduser() for e in extra)]
    models = package_models_dir() if package_models else None
    if models is not None:
        dirs.append(models)
    return list(dict.fromkeys(dirs))


def default_roots(*, data_dir: "str | os.PathLike[str] | None" = None, kaggle: bool = True,
                  package_models: bool = True) -> list[SearchRoot]:
    """The folders :func:`locate` searches, in order.

    ``$FACELIB_DATA`` (``os.pathsep``-separated), each dataset under ``/kaggle/input/``,
    ``./data`` (or ``data_dir``), the repository's ``data/``, and the ``models/`` folder of
    the ``face_recognition_models`` package (dlib models; found without importing it).
    """
    roots = [(p, "$FACELIB_DATA") for p in _env_dirs()]
    if kaggle:
        roots += [(p, "kaggle") for p in _kaggle_dirs()]
    roots += [(Path(data_dir) if data_dir is not None else Path.cwd() / "data", "data"), (repo_root() / "data", "data")]
    models = package_models_dir() if package_models else None
    if models is not None:
        roots.append((models, "package"))
    out: list[SearchRoot] = []
    seen: set[str] = set()
    for path, source in roots:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(SearchRoot(path, source, path.is_dir()))
    return out


#: Emotion words facelib recognises in file and folder names, each mapped to its label (noun and
#: adjective forms of one emotion share a label). Any other name still works as an emotion label
#: inside an expressions folder; these only decide a folder's role and the meaning of ambiguous names.
_EMOTION_SYNONYMS = {
    "neutral": "neutral", "happy": "happy", "happiness": "happy", "sad": "sad", "sadness": "sad",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "angry": "angry", "anger": "angry",
    "surprise": "surprise", "surprised": "surprise", "disgust": "disgust", "disgusted": "disgust",
    "contempt": "contempt", "smile": "smile", "smiling": "smile", "calm": "calm",
}

#: Name parts that carry no meaning: copy markers (several languages), counters, camera prefixes.
_NAME_NOISE = re.compile(r"^(?:copy|copie|copia|kopie|kopia|копия|final|edited|edit|img|image|photo|pic|"
                         r"\(?\d*\)?)$")


def emotion_label(name: str) -> str:
    """The emotion a photo or folder name stands for: lower case, copy markers, counters and
    separators dropped, noun forms mapped to one label ("" when nothing is left).

    >>> [emotion_label(n) for n in ("Neutral copy", "HAPPY_2", "sadness (1)", "Fear - Copy (3)", "very happy")]
    ['neutral', 'happy', 'sad', 'fear', 'very_happy']
    """
    kept = []
    for token in re.split(r"[\s_\-.+,]+", str(name).strip().lower()):
        if not token or _NAME_NOISE.match(token):
            continue
        token = token.strip("()[]{}").rstrip("0123456789")
        if token and not _NAME_NOISE.match(token):
            kept.append(token)
    label = "_".join(kept)
    return _EMOTION_SYNONYMS.get(label, label)


def is_emotion_name(name: str) -> bool:
    """True when ``name`` (a file stem or folder name, any case, with copy markers) names a known emotion."""
    return emotion_label(name) in _EMOTION_SYNONYMS.values()


def _guess_role(folder: Path, root: Path, stems: Sequence[str] = ()) -> str:
    """Role of a photo folder from its own name and its parents' (deepest first), then from its
    photos' names (mostly emotion names: expressions), then from the root's name."""
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        parts = folder.parts
    by_content = ("expressions" if stems and 2 * sum(is_emotion_name(s) for s in stems) >= len(stems) else None)
    for part in [*reversed(parts), None, root.name]:
        if part is None:
            if by_content:
                return by_content
            continue
        text = part.lower()
        if "express" in text or "emotion" in text or is_emotion_name(part):
            return "expressions"
        if "style" in text.replace("stylegan", "").replace("style-gan", "").replace("style_gan", ""):
            return "styles"
        if "align" in text:
            return "aligned"
    return "faces"


def _walk(root: Path) -> Iterable[tuple[Path, list[str]]]:
    seen: set[str] = set()
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        if len(here.parts) - base_depth >= _MAX_DEPTH:
            dirnames[:] = []
        yield here, sorted(filenames)


def locate(roots: "Sequence[str | os.PathLike[str]] | None" = None, *, kaggle: bool = True,
           package_models: bool = True) -> DataInventory:
    """Find weight files and photo folders, recognising every file by its content.

    Args:
        roots: folders to search instead of :func:`default_roots` (then ``kaggle`` and
            ``package_models`` are ignored).
        kaggle: include ``/kaggle/input/*`` datasets.
        package_models: include the dlib models shipped by ``face_recognition_models``.
    Returns:
        A :class:`DataInventory`. Nothing is loaded; each weight file costs a header read
        (torch zip files: their small ``data.pkl`` member).
    """
    from .align import IMAGE_EXTENSIONS

    if roots is None:
        search = default_roots(kaggle=kaggle, package_models=package_models)
    else:
        search = [SearchRoot(Path(r), "given", Path(r).is_dir()) for r in roots]
    buckets: dict[str, list[FoundFile]] = {"generator": [], "arcface": [], "dlib": [], "vgg16": []}
    folders: list[ImageFolder] = []
    unrecognised: list[Problem] = []
    problems: list[Problem] = []
    seen_files: set[str] = set()
    for root in search:
        if not root.exists:
            continue
        for folder, files in _walk(root.path):
            stems: list[str] = []
            for name in files:
                path = folder / name
                if name.startswith(".") or not path.is_file():
                    continue
                real = os.path.realpath(path)
                if real in seen_files:
                    continue
                seen_files.add(real)
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    stems.append(path.stem)
                    continue
                try:
                    res = classify_file(path)
                except OSError as e:
                    problems.append(Problem(path, f"unreadable ({e.strerror or e})"))
                    continue
                if isinstance(res, FoundFile):
                    buckets[res.kind].append(res)
                elif isinstance(res, Problem):
                    serious = any(w in res.problem for w in ("HTML", "empty", "compressed", "not unpacked", "truncated",
                                                             "corrupt", "cannot be read", "TensorFlow"))
                    (problems if serious else unrecognised).append(res)
            if stems:
                folders.append(ImageFolder(folder, len(stems), _guess_role(folder, root.path, stems)))
    return DataInventory(generators=tuple(buckets["generator"]), arcface=tuple(buckets["arcface"]),
                         dlib=tuple(buckets["dlib"]), vgg16=tuple(buckets["vgg16"]),
                         image_folders=tuple(folders), unrecognised=tuple(unrecognised),
                         problems=tuple(problems), searched=tuple(search))


# ========================================================================================
# Kaggle downloads
# ========================================================================================

def kaggle_credentials() -> str | None:
    """Where Kaggle credentials come from ("KAGGLE_USERNAME/KAGGLE_KEY", a kaggle.json path, ...), or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", "~/.kaggle")).expanduser()
    for name in ("kaggle.json", "access_token"):
        if (config_dir / name).is_file():
            return str(config_dir / name)
    return None


def _credentials_help(dest: Path) -> str:
    lines = [
        "Kaggle credentials are not configured, so nothing was downloaded. To fetch the datasets:",
        "  1. sign in at https://www.kaggle.com, open Settings -> API -> 'Create New Token' (downloads kaggle.json);",
        "  2. save it as ~/.kaggle/kaggle.json and run `chmod 600 ~/.kaggle/kaggle.json`",
        "     (or export KAGGLE_USERNAME=<user> KAGGLE_KEY=<key>);",
        "  3. run `python -m facelib data download` again.",
        f"Or download them in a browser and unzip each into {dest}/<dataset>/:",
    ]
    lines += [f"  https://www.kaggle.com/datasets/{h}" for h in KAGGLE_DATASETS]
    lines.append("On Kaggle itself, attach them to the notebook with 'Add Data' instead (they appear under /kaggle/input/).")
    return "\n".join(lines)


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did for one dataset.

    ``status``: "downloaded", "present" (verified earlier copy kept), "attached" (mounted
    under /kaggle/input), or "failed" (``error`` says why). ``problems``: files that are
    not usable (an HTML page saved as a weight file, ...).
    """

    dataset: str
    folder: Path
    status: str
    client: str | None = None
    files: tuple[dict, ...] = ()
    problems: tuple[Problem, ...] = ()
    error: str | None = None


def _manifest_path(dest: Path) -> Path:
    return dest / "MANIFEST.json"


def _read_manifest(dest: Path) -> dict:
    p = _manifest_path(dest)
    if not p.is_file():
        return {"format": "facelib.data-manifest", "version": 1, "datasets": {}}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s unreadable (%s); starting a new one", p, e)
        return {"format": "facelib.data-manifest", "version": 1, "datasets": {}}
    data.setdefault("datasets", {})
    return data


def _write_manifest(dest: Path, data: dict) -> None:
    with atomic_path(_manifest_path(dest)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _record_files(folder: Path, root: Path) -> tuple[list[dict], list[Problem]]:
    from .weights import file_sha256, sniff_file

    records, problems = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rec = {"path": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": file_sha256(path),
               "header": sniff_file(path)}
        res = classify_file(path)
        if isinstance(res, FoundFile):
            rec["kind"], rec["format"] = res.kind, res.format
        elif isinstance(res, Problem):
            rec["problem"] = res.problem
            if rec["header"] in ("html", "empty") or "compressed" in res.problem:
                problems.append(res)
        records.append(rec)
    return records, problems


def _fetch_kagglehub(handle: str, folder: Path, force: bool) -> None:
    import kagglehub  # imported here: the client is only needed for downloads

    try:
        path = kagglehub.dataset_download(handle, force_download=force, output_dir=str(folder))
    except TypeError:  # older kagglehub without output_dir: copy out of its cache
        path = kagglehub.dataset_download(handle, force_download=force)
    path = Path(path)
    if path.resolve() != folder.resolve():
        _copy_tree(path, folder)


def _fetch_kaggle_api(handle: str, folder: Path, force: bool) -> None:
    # `import kaggle` authenticates as a side effect; it is only reached with credentials present.
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.authenticate()
    api.dataset_download_files(handle, path=str(folder), force=force, quiet=False, unzip=True)


def _copy_tree(src: Path, dst: Path) -> None:
    if src.is_file():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / src.name)
        return
    for p in src.rglob("*"):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, target)
            except OSError:
                shutil.copy2(p, target)


_CLIENTS: dict[str, Callable[[str, Path, bool], None]] = {
    "kagglehub": _fetch_kagglehub,
    "kaggle": _fetch_kaggle_api,
}


def download(dest: "str | os.PathLike[str]" = "data", datasets: Sequence[str] = KAGGLE_DATASETS, *,
             force: bool = False, on_progress: Callable[[str], None] | None = None) -> list[DownloadResult]:
    """Fetch Kaggle datasets into ``dest/<slug>/`` and record them in ``dest/MANIFEST.json``.

    Uses ``kagglehub.dataset_download`` and falls back to the ``kaggle`` package's
    ``KaggleApi.dataset_download_files``; both are imported only here. Each downloaded file's
    size, SHA-256, header and recognised kind go into the manifest; HTML pages or empty files
    where weights should be are returned as problems. A dataset whose manifest entry still
    matches the files on disk (sizes) is not fetched again unless ``force``.

    Args:
        dest: the data folder.
        datasets: "owner/slug" handles (default: :data:`KAGGLE_DATASETS`).
        force: download again even when a verified copy exists.
        on_progress: called with one line per dataset.
    Returns:
        One :class:`DownloadResult` per dataset.
    Raises:
        DependencyError: no Kaggle credentials and no attached copy (the message says exactly
            how to configure them), or neither client is installed.
    """
    dest = Path(dest)
    say = on_progress or (lambda s: log.info("%s", s))
    manifest = _read_manifest(dest)
    results: list[DownloadResult] = []
    pending = []
    for handle in datasets:
        if handle.count("/") != 1:
            raise InputError(f"dataset: expected 'owner/slug', got {handle!r}")
        slug = handle.split("/")[1]
        folder = dest / slug
        attached = Path("/kaggle/input") / slug
        if attached.is_dir() and not force:
            results.append(DownloadResult(handle, attached, "attached"))
            say(f"{handle}: attached at {attached}")
            continue
        entry = manifest["datasets"].get(handle)
        if entry and not force and not verify_manifest(dest, datasets=[handle]):
            results.append(DownloadResult(handle, folder, "present", entry.get("client"),
                                          tuple(entry.get("files", ()))))
            say(f"{handle}: already in {folder} (sizes match {_manifest_path(dest)})")
            continue
        pending.append((handle, folder))
    if not pending:
        return results
    creds = kaggle_credentials()
    if creds is None:
        raise DependencyError(_credentials_help(dest))
    available = [name for name in _CLIENTS if importlib.util.find_spec(name) is not None]
    if not available:
        raise DependencyError("neither kagglehub nor kaggle is installed: pip install kagglehub")
    for handle, folder in pending:
        errors = []
        client = None
        for name in available:
            try:
                say(f"{handle}: downloading with {name} into {folder} ...")
                folder.mkdir(parents=True, exist_ok=True)
                _CLIENTS[name](handle, folder, force)
                client = name
                break
            except Exception as e:  # network, auth, 404, client bugs: try the next client
                errors.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
                log.debug("download of %s with %s failed", handle, name, exc_info=True)
        if client is None:
            results.append(DownloadResult(handle, folder, "failed", error="; ".join(errors)))
            say(f"{handle}: FAILED ({'; '.join(errors)})")
            continue
        records, problems = _record_files(folder, dest)
        manifest["datasets"][handle] = {
            "client": client, "folder": str(folder.relative_to(dest)) if folder.is_relative_to(dest) else str(folder),
            "fetched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "credentials": creds if creds.startswith("KAGGLE_") else "kaggle.json", "files": records,
        }
        _write_manifest(dest, manifest)
        results.append(DownloadResult(handle, folder, "downloaded", client, tuple(records), tuple(problems)))
        msg = f"{handle}: {len(records)} file(s) with {client}"
        if problems:
            msg += "; PROBLEMS: " + "; ".join(f"{p.path.name}: {p.problem}" for p in problems)
        say(msg)
    return results


def verify_manifest(dest: "str | os.PathLike[str]" = "data", *, datasets: Sequence[str] | None = None,
                    hashes: bool = False) -> list[Problem]:
    """Compare the files on disk with ``dest/MANIFEST.json``.

    Args:
        dest: the data folder holding the manifest.
        datasets: handles to check (default: all recorded).
        hashes: also recompute SHA-256 (slow for large files); otherwise sizes only.
    Returns:
        Problems (missing files, changed sizes or hashes, recorded problems); empty when all match.
    """
    from .weights import file_sha256

    dest = Path(dest)
    manifest = _read_manifest(dest)
    out: list[Problem] = []
    for handle, entry in manifest["datasets"].items():
        if datasets is not None and handle not in datasets:
            continue
        for rec in entry.get("files", ()):
            path = dest / rec["path"]
            if not path.is_file():
                out.append(Problem(path, f"missing (recorded for {handle})"))
            elif path.stat().st_size != rec["size"]:
                out.append(Problem(path, f"size {path.stat().st_size} != recorded {rec['size']}"))
            elif hashes and file_sha256(path) != rec["sha256"]:
                out.append(Problem(path, "SHA-256 differs from the one recorded at download"))
            elif rec.get("problem") and rec.get("header") in ("html", "empty"):
                out.append(Problem(path, rec["problem"]))
    return out


# ========================================================================================
# Notebook setup
# ========================================================================================

#: The small untrained generator of smoke runs (same as ``python -m facelib sample`` without weights).
SMOKE_GENERATOR = {"resolution": 64, "style_dim": 64, "n_mlp": 2, "channel_max": 64}
#: The small untrained identity network of smoke runs.
SMOKE_ARCFACE = {"arch": "iresnet", "layers": (1, 1, 1, 1), "base_channels": 8}
#: Stamp for images whose identity came from the untrained identity network.
RANDOM_ID_STAMP = "RANDOM IDENTITY NETWORK - SMOKE RUN"


@dataclass(frozen=True)
class IdentityNetwork:
    """An identity network and where it came from: ``path`` is None for the small untrained one."""

    net: Any
    path: Path | None

    @property
    def random(self) -> bool:
        return self.path is None

    def describe(self) -> str:
        return (f"ArcFace {self.path}" if self.path is not None
                else "RANDOM identity network (untrained): identity figures are a smoke test only")


def identity_network(path: "str | os.PathLike[str] | None" = None, *, smoke: bool = False,
                     inventory: "DataInventory | None" = None, device: Any = None, seed: int = 0) -> IdentityNetwork:
    """The ArcFace network for face swap: ``path`` when given; else (outside a smoke run) the first
    one :func:`locate` recognises; else the small untrained network of smoke runs (its results
    must carry :data:`RANDOM_ID_STAMP`)."""
    from . import identity

    if not path and not smoke:
        found = (inventory if inventory is not None else locate()).first("arcface")
        path = found.path if found is not None else None
    if path:
        return IdentityNetwork(identity.load_arcface(path, device=device), Path(path))
    return IdentityNetwork(identity.build_arcface(**SMOKE_ARCFACE, seed=seed, device=device), None)

_CACHE: dict[tuple, Any] = {}
_STAND_INS: dict[tuple[str, str], str] = {}  # (out folder, step) -> the earlier step to run first


def smoke_generator(seed: int = 0, device: Any = None):
    """The small untrained StyleGAN2 of smoke runs (64 px, 10 W+ rows), deterministic in ``seed``.

    Its outputs are not faces: every image made with it must carry :data:`SMOKE_STAMP`.
    """
    from .stylegan2 import StyleGAN2Generator
    from .weights import state_fingerprint

    G = StyleGAN2Generator(**SMOKE_GENERATOR, seed=seed)
    G.weights_sha256 = "smoke-" + state_fingerprint(G.state_dict())[:16]
    G.source_path = None
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


@dataclass(frozen=True)
class NotebookSetup:
    """What a notebook needs after its parameters cell (see :func:`notebook_setup`).

    Attributes:
        step: the notebook's name, e.g. "02_projection".
        out: the results folder (created).
        smoke: True for the labelled smoke run with the untrained generator.
        device: "cuda", "mps" or "cpu".
        seed: the run's seed.
        weights: the generator file (None in a smoke run).
        inventory: what :func:`locate` found.
    """

    step: str
    out: Path
    smoke: bool
    device: str
    seed: int
    weights: Path | None
    inventory: DataInventory

    @property
    def stamp(self) -> str | None:
        """The smoke-run label, the stand-in label (see :meth:`use_inputs`), or None for a real run."""
        return SMOKE_STAMP if self.smoke else (STAND_IN_STAMP if self.stand_ins else None)

    def generator(self):
        """The generator on :attr:`device`: loaded from :attr:`weights`, or :func:`smoke_generator`.

        Cached per file and device, so re-running the cell is free.
        """
        key = ("G", str(self.weights), self.device, self.seed if self.smoke else None)
        if key not in _CACHE:
            if self.smoke:
                _CACHE[key] = smoke_generator(self.seed, self.device)
            else:
                from .weights import load_generator

                _CACHE[key] = load_generator(self.weights, device=self.device)
        return _CACHE[key]

    def arcface(self):
        """The ArcFace network: the first one found, or a small untrained one in a smoke run.

        Raises:
            DependencyError: a real run without ArcFace weights (the message says where it looked).
        """
        found = None if self.smoke else self.inventory.require("arcface")
        key = ("arcface", str(found.path) if found else None, self.device, self.seed if self.smoke else None)
        if key not in _CACHE:
            _CACHE[key] = identity_network(found.path if found else None, smoke=self.smoke, inventory=self.inventory,
                                           device=self.device, seed=self.seed).net
        return _CACHE[key]

    def vgg_path(self) -> Path | None:
        """A VGG16 weight file for LPIPS (recognised by content), or None (LPIPS then falls back / is off)."""
        f = self.inventory.first("vgg16")
        return f.path if f else None

    @property
    def stand_ins(self) -> str | None:
        """What to do for real inputs when this step went on with random stand-ins (e.g. "run
        02_projection first"), else None."""
        return _STAND_INS.get((str(self.out), self.step))

    def use_inputs(self, stand_ins: bool, *, allow: bool = False, run_first: str = "02_projection",
                   notes: Sequence[str] = ()) -> None:
        """Accept or refuse inputs where random latents stood in for missing earlier results or photos.

        In a smoke run, or with ``allow`` (the notebook's ``ALLOW_STAND_INS``), the step goes on:
        its images are stamped (:data:`STAND_IN_STAMP`), its record says so and the run status
        reads "ok, with stand-in inputs: run <run_first> first" (or, when only reference photos
        were missing, which ones to add). In a real run without ``allow`` it is an error.

        Args:
            stand_ins: whether random latents stood in (``EditInputs.stand_ins``).
            allow: go on with them in a real run.
            run_first: the notebook whose results were expected.
            notes: the inputs' notes (``EditInputs.notes``), to say what was missing.
        Raises:
            InputError: stand-ins in a real run without ``allow``.
        """
        key = (str(self.out), self.step)
        if not stand_ins:
            _STAND_INS.pop(key, None)
            return
        missing = [n for n in notes if "random" in n or "stand" in n]
        if not missing or any(n.startswith("targets:") for n in missing):
            hint = f"run {run_first} first"
        else:
            hint = "add the missing reference photos (" + "; ".join(n.split(":", 1)[0] for n in missing) + ")"
        if not self.smoke and not allow:
            detail = "; ".join(missing) or "missing inputs"
            raise InputError(f"{self.step}: earlier results are missing, random latents would stand in ({detail}). "
                             f"Run {run_first} first (and add the photos named above), or set ALLOW_STAND_INS = True "
                             "to go on with stamped stand-ins")
        _STAND_INS[key] = hint
        log.warning("%s: going on with random stand-in inputs (%s for real results); its images are stamped",
                    self.step, hint)

    def label(self, image: Any, text: str | None = None) -> Any:
        """Stamp a PIL image with the smoke-run or stand-in label (unchanged in a real run on real inputs)."""
        if not self.smoke and not self.stand_ins:
            return image
        from .grids import stamp

        return stamp(image, text or (SMOKE_STAMP if self.smoke else STAND_IN_STAMP))

    def title(self, text: str) -> str:
        """A grid title; in a smoke run the stamp and the one-line hint for real weights come first
        (with stand-in inputs, their stamp)."""
        if self.smoke:
            return f"{SMOKE_STAMP}\n{SMOKE_HINT}\n{text}"
        return f"{STAND_IN_STAMP}\n{text}" if self.stand_ins else text

    def describe(self) -> str:
        """One line for the notebook's output."""
        from . import __version__

        src = "untrained smoke generator" if self.smoke else f"generator {self.weights}"
        return f"facelib {__version__} | {self.step} | device {self.device} | seed {self.seed} | {src} | out {self.out}"

    def record(self, **info: Any) -> None:
        """Merge this step's provenance (smoke flag, weights, device, plus ``info``) into ``out/provenance.json``."""
        from . import __version__

        path = self.out / "provenance.json"
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        data[self.step] = {"smoke": self.smoke, "weights": str(self.weights) if self.weights else None,
                           "device": self.device, "seed": self.seed, "facelib_version": __version__,
                           "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           **({"stand_in_hint": self.stand_ins} if self.stand_ins else {}),
                           **{k: jsonable(v) for k, v in info.items()}}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def notebook_setup(step: str, *, out_dir: "str | os.PathLike[str]" = "out", smoke: bool = False,
                   smoke_if_missing: bool = False, weights: "str | os.PathLike[str] | None" = "",
                   device: str = "auto", seed: int = 0, need_generator: bool = True) -> NotebookSetup:
    """Settle device, generator file and results folder for one notebook.

    Args:
        step: the notebook's name ("02_projection").
        out_dir: the results folder (``OUT_DIR`` parameter).
        smoke: the labelled smoke run with the untrained generator (``SMOKE``).
        smoke_if_missing: when ``weights`` is empty and :func:`locate` finds no generator, make
            it the smoke run (logged) instead of raising.
        weights: generator file (``WEIGHTS``); "" or None: the first generator :func:`locate` finds.
        device: "auto" (CUDA, else MPS, else CPU), or any torch device string (``DEVICE``).
        seed: the run's seed (``SEED``).
        need_generator: when True and not a smoke run, a missing generator is an error now
            rather than later.
    Returns:
        A :class:`NotebookSetup`.
    Raises:
        DependencyError: a real run and no generator found, without ``smoke_if_missing`` (the
            message lists where it looked, and how to get the weights or run the smoke pass
            with ``SMOKE = True``).
        CheckpointError: ``weights`` names a file that does not exist.
    """
    from .weights import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inventory = locate()
    dev = str(resolve_device(device))
    path: Path | None = None
    if not smoke:
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise CheckpointError(path, "WEIGHTS names a file that does not exist")
        elif need_generator:
            try:
                path = inventory.require("generator").path
            except DependencyError as e:
                if not smoke_if_missing:
                    raise DependencyError(f"{e} Or set SMOKE = True for the labelled smoke run with an "
                                          "untrained generator.") from None
                smoke = True
                log.warning("no StyleGAN2 generator found (%s): labelled smoke run with the untrained generator",
                            inventory.where_looked())
    setup = NotebookSetup(step=step, out=out, smoke=bool(smoke), device=dev, seed=int(seed), weights=path,
                          inventory=inventory)
    log.info("%s", setup.describe())
    return setup
