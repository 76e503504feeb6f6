"""Finding inputs by their content: photos and weight files.

:func:`locate` searches ``$FACELIB_DATA``, ``./data/`` (and the repository's ``data/``) and,
on Kaggle, every attached dataset under ``/kaggle/input/`` (the folders of
:mod:`facelib.paths`), and sorts what it finds into StyleGAN2 generators, ArcFace networks,
dlib models, VGG16 weights (for LPIPS) and photo folders. Weight files are recognised by
their **content**, never by their names:

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

Fetching the Kaggle datasets is :mod:`facelib.kaggle`; notebook setup is :mod:`facelib.session`.
"""
from __future__ import annotations

import bz2
import pickletools
import logging
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ._io import jsonable, sniff_file
from .encoders import describe_encoder_checkpoint
from .errors import CheckpointError, DependencyError, InputError
from .identity import detect_arcface_arch
from .paths import IMAGE_EXTENSIONS, env_dirs, kaggle_dirs, package_models_dir, repo_root
from .stamps import REAL_WEIGHTS_HELP
from .torch_meta import TensorMeta, human_size, read_torch_metadata
from .weights import looks_like_generator  # the key test load_generator uses

__all__ = [
    "FoundFile",
    "ImageFolder",
    "Problem",
    "SearchRoot",
    "DataInventory",
    "default_roots",
    "locate",
    "classify_file",
]

log = logging.getLogger(__name__)

_TEXT_EXTENSIONS = (".md", ".txt", ".json", ".csv", ".yaml", ".yml", ".py", ".ipynb", ".html", ".htm",
                    ".cfg", ".toml", ".ini", ".log", ".tsv", ".xml", ".sh", ".rst")
_WEIGHT_EXTENSIONS = (".pt", ".pth", ".pkl", ".pickle", ".dat", ".bin", ".ckpt", ".tar", ".model", "")
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", ".venv", "venv", "node_modules"}
_MAX_DEPTH = 6
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
                lines.append(f"  {f.path}  {f.format}: {f.detail}, {human_size(f.size)}{alias}")
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
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("g_ema"), Mapping):
        state = _strip_module(obj["g_ema"])
        if looks_like_generator(state):
            fmt = "rosinality-training" if "d" in obj or "g_optim" in obj else "rosinality"
            extra = "" if "latent_avg" in obj else " (no latent_avg: estimated from the mapping when loaded)"
            return fmt, _generator_detail(state) + extra
    if isinstance(obj.get("g"), Mapping):
        state = _strip_module(obj["g"])
        if looks_like_generator(state):
            return "rosinality-training", _generator_detail(state) + " (training generator 'g' only)"
    if _is_meta_state(obj):
        state = _strip_module(obj)
        if looks_like_generator(state):
            return "state-dict", _generator_detail(state) + " (bare g_ema state dict)"
    if isinstance(obj.get("state_dict"), Mapping):  # pSp / e4e encoder: its decoder is a generator
        hit = describe_encoder_checkpoint(obj)
        state = {k[len("decoder."):]: v for k, v in _strip_module(obj["state_dict"]).items()
                 if isinstance(k, str) and k.startswith("decoder.")}
        if hit is not None and looks_like_generator(state):
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

def default_roots(*, data_dir: "str | os.PathLike[str] | None" = None, kaggle: bool = True,
                  package_models: bool = True) -> list[SearchRoot]:
    """The folders :func:`locate` searches, in order.

    ``$FACELIB_DATA`` (``os.pathsep``-separated), each dataset under ``/kaggle/input/``,
    ``./data`` (or ``data_dir``), the repository's ``data/``, and the ``models/`` folder of
    the ``face_recognition_models`` package (dlib models; found without importing it).
    """
    roots = [(p, "$FACELIB_DATA") for p in env_dirs()]
    if kaggle:
        roots += [(p, "kaggle") for p in kaggle_dirs()]
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
