"""What the command line's sub-commands share: reading options, the generator, checks that print
one clear line, and the keep-or-redo rule for finished outputs.

Heavy modules are imported inside the functions so ``python -m facelib --help`` stays instant.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Sequence

from ._io import jsonable
from .errors import FacelibError, InputError

__all__ = ["DEVICE_HELP", "MAX_SAMPLES", "given_options", "open_generator", "check_counts", "check_finite",
           "device_option", "mask_option", "kept_or_done", "pending_path", "writing_output", "is_smoke"]

log = logging.getLogger(__name__)

DEVICE_HELP = "auto, cpu, cuda, cuda:1, mps"
MAX_SAMPLES = 256  # one grid image; more would only exhaust memory


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The options among ``names`` that were given (None = not given: the config's default applies)."""
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if options.get("lpips") == "none":
        options["lpips"] = None
    return options


def open_generator(weights: str | None, device=None, *, seed: int = 0):
    """The generator in ``weights``; without it the first one :func:`facelib.data.locate` finds (as
    ``demo`` does); without any, the small untrained generator of smoke runs (its images are stamped)."""
    from .data import locate
    from .session import smoke_generator
    from .stamps import REAL_WEIGHTS_HELP
    from .weights import load_generator

    if not weights:
        found = locate().first("generator")
        if found is not None:
            log.info("generator: %s (found by `python -m facelib data status`; --weights picks another)", found.path)
            weights = str(found.path)
    if weights:
        return load_generator(weights, device=device)
    log.warning("no --weights and no generator found: using the small UNTRAINED generator (a smoke run; "
                "its images are stamped and are not faces); `python -m facelib data status` says where to put one")
    log.debug("%s", REAL_WEIGHTS_HELP)
    return smoke_generator(seed, device)


def check_counts(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Integer options that must be >= 1 when given (``--steps 0`` would optimise nothing)."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {v}")


def check_finite(args: argparse.Namespace, names: Sequence[str]) -> None:
    import math

    for name in names:
        v = getattr(args, name, None)
        if v is not None and not math.isfinite(v):
            raise InputError(f"--{name.replace('_', '-')}: expected a finite number, got {v}")


def device_option(text: str):
    from .weights import resolve_device

    return resolve_device(text, name="--device")


def mask_option(spec: str, n_latent: int, option: str):
    """``--rows`` / ``--mask`` text -> LayerMask. Rows are written in the report's 18-row (1024 px)
    terms and carried over to the generator's rows by :meth:`facelib.edits.LayerMask.scaled`, as
    the notebooks do; an empty or malformed mask is an error naming the option."""
    from .edits import LayerMask

    try:
        mask = LayerMask.scaled(spec, n_latent)
    except FacelibError as e:
        raise InputError(f"{option} {spec!r}: {e} (rows are given in 18-row terms, 0-17)") from None
    if not any(w > 0 for w in mask.weights):
        raise InputError(f"{option} {spec!r}: selects no W+ row, so the edit would change nothing; "
                         "give rows such as '1-17' or a preset")
    return mask


def pending_path(out) -> Path:
    """The marker a single-output command keeps beside OUT while it writes OUT and its record:
    ``<OUT>.pending.json`` (the settings being written)."""
    from pathlib import Path

    out = Path(out)
    return out.with_name(out.name + ".pending.json")


@contextlib.contextmanager
def writing_output(out, settings: dict):
    """Mark OUT as being written with ``settings`` for the duration of the block.

    The marker (:func:`pending_path`) is written before the first output and removed after the
    last, so a run killed in between (image written, settings record not yet) is recognised on
    the next run as unfinished and redone, instead of being mistaken for an unrelated file. An
    exception inside the block leaves the marker too (the outputs may be incomplete)."""
    import json
    import os

    from ._io import atomic_path

    marker = pending_path(out)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"settings": settings, "pid": os.getpid()}, default=str))
    yield
    marker.unlink(missing_ok=True)


def kept_or_done(out, meta_path, same: dict, overwrite: bool) -> int | None:
    """For single-output commands: None = go on; 0 = the same result exists (done); 1 = a result of
    other settings (or a file without its settings record) exists and is kept (without --overwrite).

    A record of the same settings whose image is missing is redone, and so is an output whose
    :func:`writing_output` marker survives a killed run (unless the record shows that run finished)."""
    import json

    out, meta_path = Path(out), Path(meta_path)
    try:
        saved = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        saved = None
    marker = pending_path(out)
    if marker.exists():
        try:
            pending = json.loads(marker.read_text()).get("settings")
        except (OSError, ValueError, AttributeError):
            pending = None  # not a marker this command wrote (those are written atomically): no evidence
        if isinstance(pending, dict) and pending:
            finished = saved is not None and out.exists() and all(
                jsonable(saved.get(k)) == jsonable(v) for k, v in pending.items())
            if not finished:  # the earlier run stopped between its writes: nothing finished is lost by redoing it
                print(f"{out}: an earlier run was interrupted while writing it; making it again")
                return None
        marker.unlink(missing_ok=True)  # that run finished (or the file says nothing): the usual rules apply
    if overwrite or not (out.exists() or meta_path.exists()):
        return None
    if saved is None:
        print(f"kept {out}: it exists without a readable settings record ({meta_path.name}), so it may be "
              "another file or an interrupted run; rerun with --overwrite to replace it")
        return 1
    diff = [k for k, v in same.items() if jsonable(saved.get(k)) != jsonable(v)]
    if not diff:
        if out.exists():
            print(f"{out}: already done with these settings (--overwrite redoes it)")
            return 0
        return None  # the record of an interrupted run: make the image again
    shown = "; ".join(_difference(k, saved.get(k), same[k]) for k in diff[:3])
    print(f"kept {out}: made with other settings ({shown}); rerun with --overwrite to replace it")
    return 1


def _difference(name: str, saved, now) -> str:
    """``name 'a' (now 'b')``; for two mappings only the entries that differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = [k for k in now if saved.get(k) != now[k]] + [k for k in saved if k not in now]
        return ", ".join(f"{name}.{k} {saved.get(k)!r} (now {now.get(k)!r})" for k in keys[:3])
    return f"{name} {saved!r} (now {now!r})"


def is_smoke(G) -> bool:
    """True for the untrained smoke generator (its fingerprint is marked so), whose images must be stamped."""
    return str(getattr(G, "weights_sha256", "")).startswith("smoke-")


def refuse_existing(path: str, option: str, overwrite: bool) -> None:
    """A single-output command never replaces an existing file unasked (one error line, the file untouched)."""
    if Path(path).exists() and not overwrite:
        raise InputError(f"{option} {path}: exists; pass --overwrite to replace it")
