"""Results of other settings side by side: the folder a rerun with other settings writes into.

A notebook step writes its results into one folder (``out/latents``, ``out/aligned``,
``out/face_swap``). When that folder already holds finished results made with other settings,
a rerun neither replaces them nor passes them off as its own: it writes beside them into
:func:`beside_folder`, ``<folder>@<tag>``, where the tag is a short hash of the settings that
make the results (:func:`settings_tag`). The same settings always give the same tag, so a rerun
with them finds its finished results there and skips them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._io import jsonable

__all__ = ["settings_tag", "beside_folder", "BesideChoice", "choose_beside", "other_settings", "recorded_folder"]

#: Hex digits of the tag (32 bits: a clash needs tens of thousands of settings in one folder).
TAG_LENGTH = 8


def settings_tag(settings: Mapping[str, Any]) -> str:
    """A short deterministic name for ``settings``: the first :data:`TAG_LENGTH` hex digits of the
    SHA-256 of their canonical JSON (sorted keys, tuples as lists).

    Args:
        settings: the settings that make a step's results (config fields without the ones that
            do not change them, the generator's id, ...), JSON-able values.
    Returns:
        8 lowercase hex digits; equal settings give equal tags whatever the key order.

    >>> settings_tag({"steps": 50, "lr": 0.1}) == settings_tag({"lr": 0.1, "steps": 50})
    True
    """
    text = json.dumps(jsonable(dict(settings)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:TAG_LENGTH]


def beside_folder(folder: "str | os.PathLike[str]", settings: Mapping[str, Any]) -> Path:
    """The sibling of ``folder`` for results of ``settings``: ``<parent>/<name>@<settings_tag>``.

    >>> beside_folder("out/latents", {"steps": 50}).name.startswith("latents@")
    True
    """
    folder = Path(folder)
    return folder.with_name(f"{folder.name}@{settings_tag(settings)}")


@dataclass(frozen=True)
class BesideChoice:
    """Where a run writes (:func:`choose_beside`).

    Attributes:
        folder: the folder this run writes into: ``usual``, or its sibling for these settings.
        usual: the folder the step normally writes into.
        others: why each result of other settings in ``usual`` was kept (one entry per result).
        note: one line saying that ``usual`` holds results of other settings, that they are kept
            and where this run writes instead; None when ``folder`` is ``usual``.
    """

    folder: Path
    usual: Path
    others: tuple[str, ...] = ()
    note: str | None = None

    @property
    def beside(self) -> bool:
        """True when this run writes beside the usual folder."""
        return self.folder != self.usual


def choose_beside(usual: "str | os.PathLike[str]", settings: Mapping[str, Any], others: Sequence[str], *,
                  replace_hint: str = "overwrite=True replaces them") -> BesideChoice:
    """The folder for this run: ``usual`` when it holds no finished result of other settings for
    this run's items (``others`` empty), else :func:`beside_folder` of ``usual`` and ``settings``.

    Args:
        usual: the step's folder (e.g. ``out/latents``).
        settings: what makes the results (see :func:`settings_tag`).
        others: for each of this run's items that ``usual`` holds a finished result of other
            settings for, why (e.g. "made with other settings: steps 1000 (now 50)").
        replace_hint: how to replace them instead, for the note.
    Returns:
        A :class:`BesideChoice`; its note names the folders, the count and the first reasons.
    """
    usual = Path(usual)
    if not others:
        return BesideChoice(usual, usual)
    sibling = beside_folder(usual, settings)
    reasons = list(dict.fromkeys(_short(why) for why in others))
    shown = "; ".join(reasons[:2]) + ("; ..." if len(reasons) > 2 else "")
    note = (f"{usual} holds {len(others)} result(s) made with other settings ({shown}); they are kept and this "
            f"run writes beside them in {sibling} ({replace_hint})")
    return BesideChoice(sibling, usual, tuple(others), note)


def other_settings(sidecar: "str | os.PathLike[str]", settings: Mapping[str, Any], *,
                   fmt: str | None = None) -> str | None:
    """Why the finished result described by the JSON ``sidecar`` was made with other settings than
    ``settings``, or None when it was made with them or is no finished result (no file, unreadable,
    another ``fmt``, or ``"interrupted"``: such a result is redone, not kept).

    Each key of ``settings`` is compared with the sidecar's (values as JSON holds them); a dict
    value (a config) is compared field by field, so the reason names what changed.

    >>> import tempfile, pathlib
    >>> side = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = side.write_text('{"config": {"steps": 200, "lr": 0.1}, "weights_sha256": "ab"}')
    >>> other_settings(side, {"config": {"steps": 25, "lr": 0.1}, "weights_sha256": "ab"})
    'made with other settings: steps 200 (now 25)'
    """
    try:
        meta = json.loads(Path(sidecar).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("interrupted") or (fmt is not None and meta.get("format") != fmt):
        return None
    changed: list[str] = []
    for key, want in jsonable(dict(settings)).items():
        have = meta.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            changed += [f"{k} {have.get(k)!r} (now {v!r})" for k, v in want.items() if have.get(k) != v]
        elif have != want:
            changed.append(f"{key} {str(have)[:12]!r} (now {str(want)[:12]!r})")
    return "made with other settings: " + ", ".join(changed[:3]) if changed else None


def recorded_folder(out: "str | os.PathLike[str]", step: str, key: str,
                    default: "str | os.PathLike[str]") -> Path:
    """The folder notebook ``step`` recorded under ``key`` in ``out/provenance.json`` (where its
    last run wrote, e.g. ``out/latents@1a2b3c4d``) when that folder exists, else ``default``.

    A relative record is looked up in ``out`` first (by its name: the notebooks write their
    folders there), then as it is.
    """
    out = Path(out)
    try:
        record = json.loads((out / "provenance.json").read_text()).get(step) or {}
        value = record.get(key) if isinstance(record, Mapping) else None
    except (OSError, ValueError, AttributeError):
        value = None
    if isinstance(value, str) and value:
        path = Path(value)
        for candidate in ([path] if path.is_absolute() else [out / path.name, path]):
            if candidate.is_dir():
                return candidate
    return Path(default)


def _short(why: str) -> str:
    for head in ("made with other settings: ", "made with other settings "):
        if why.startswith(head):
            return why[len(head):]
    return why
