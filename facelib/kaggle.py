"""Fetching the Kaggle datasets behind the original report, and checking them later.

:func:`download` fetches the datasets with Kaggle's own clients (``kagglehub``, else the
``kaggle`` package, both imported only when used) and records every file's size and SHA-256
in ``data/MANIFEST.json``; :func:`verify_manifest` compares the files with that record.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ._io import atomic_path, sniff_file
from .errors import DependencyError, InputError
from .data import FoundFile, Problem, classify_file
from .weights import file_sha256

__all__ = ["KAGGLE_DATASETS", "kaggle_credentials", "DownloadResult", "download", "verify_manifest"]

log = logging.getLogger(__name__)

#: The Kaggle datasets behind the original report (owner/slug).
KAGGLE_DATASETS: tuple[str, ...] = (
    "sirtimio/arcface-weights",
    "sirtimio/aligned-data",
    "sirtimio/bad-trip-styles",
    "sirtimio/styles-expressions",
    "sirtimio/style-gan-data",
)


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
    from kaggle.api.kaggle_api_extended import KaggleApi  # optional client, only for downloads

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
