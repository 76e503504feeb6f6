"""The notebook session: what each notebook gets after its parameters cell.

:func:`notebook_setup` gives the device, the generator (real, or the small untrained one of
a smoke run), labels for smoke-run images and the stand-in notes; :func:`identity_network`
is the one way notebooks and the command line get the ArcFace network for a swap.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import __version__, identity
from ._io import atomic_path, jsonable
from .data import DataInventory, locate
from .errors import CheckpointError, DependencyError, InputError
from .grids import stamp
from .stamps import RANDOM_ID_STAMP, SMOKE_HINT, SMOKE_STAMP, STAND_IN_STAMP
from .stylegan2 import StyleGAN2Generator
from .variants import recorded_folder
from .weights import load_generator, resolve_device, state_fingerprint

__all__ = ["SMOKE_GENERATOR", "SMOKE_ARCFACE", "RANDOM_ID_STAMP", "IdentityNetwork", "identity_network",
           "smoke_generator", "NotebookSetup", "notebook_setup"]

log = logging.getLogger(__name__)

# ========================================================================================
# Notebook setup
# ========================================================================================

#: The small untrained generator of smoke runs (same as ``python -m facelib sample`` without weights).
SMOKE_GENERATOR = {"resolution": 64, "style_dim": 64, "n_mlp": 2, "channel_max": 64}
#: The small untrained identity network of smoke runs.
SMOKE_ARCFACE = {"arch": "iresnet", "layers": (1, 1, 1, 1), "base_channels": 8}


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

    def latents_dir(self) -> Path:
        """The projections of notebook 02's last run: the folder it recorded in ``out/provenance.json``
        (``out/latents``, or ``out/latents@<tag>`` when it ran beside results of other settings)
        when that folder exists, else ``out/latents``."""
        return recorded_folder(self.out, "02_projection", "latents_dir", self.out / "latents")

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
        return stamp(image, text or (SMOKE_STAMP if self.smoke else STAND_IN_STAMP))

    def title(self, text: str) -> str:
        """A grid title; in a smoke run the stamp and the one-line hint for real weights come first
        (with stand-in inputs, their stamp)."""
        if self.smoke:
            return f"{SMOKE_STAMP}\n{SMOKE_HINT}\n{text}"
        return f"{STAND_IN_STAMP}\n{text}" if self.stand_ins else text

    def describe(self) -> str:
        """One line for the notebook's output."""
        src = "untrained smoke generator" if self.smoke else f"generator {self.weights}"
        return f"facelib {__version__} | {self.step} | device {self.device} | seed {self.seed} | {src} | out {self.out}"

    def record(self, **info: Any) -> None:
        """Merge this step's provenance (smoke flag, weights, device, plus ``info``) into ``out/provenance.json``."""
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
