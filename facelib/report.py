"""The report: ``out/report.md`` and ``out/report.html`` from whatever is in ``out/``.

:func:`build_report` runs nothing; it collects the grids (``out/grids/NN_*.jpg``) and the
per-image files the notebooks wrote, and lays them out like the original Kaggle report:

1. alignment: ``out/aligned/<person>/<n>.jpg``;
2. originals vs projections: ``out/aligned/<person>/<n>.jpg`` beside ``out/latents/<person>/<n>.png``,
   with PSNR / LPIPS from the ``.json`` sidecars;
3. the style table: per style ``out/styles/<style>.jpg`` (photo), ``<style>_style.jpg``
   (its projection), ``transferred_<style>.jpg`` (the style on the first face);
4. the expression table: per expression the reference photo, its projection and the
   transferred result, neutral first;
5. the face-swap table: source, target, ``out/face_swap/<source>_on_<target>.jpg``;
6. edit directions: the saved direction files (``out/directions/*.json``) and the chosen edits
   (``out/directions/edits/*.jpg``).

Every edited or generated image is labelled as such. When the run used the untrained
generator (``out/run.json`` or ``out/provenance.json`` say so) the report opens with a
"smoke run" banner and the instructions for attaching real weights, and every generated
image carries the same label. A step with no output says so, and why when known (notebook
missing, failed, not run).
"""
from __future__ import annotations

import datetime as _dt
import html as _html
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from . import __version__
from ._io import atomic_path
from .paths import repo_root
from .quality import quality_card
from .stamps import REAL_WEIGHTS_HELP, SMOKE_STAMP
from .variants import recorded_folder

__all__ = ["build_report", "Report", "Section", "RESPONSIBLE_USE", "stand_in_hint"]

log = logging.getLogger(__name__)

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")

RESPONSIBLE_USE = (
    "Edit and publish only faces of people who agreed to it (or public-domain material), and never use "
    "the results to deceive or to impersonate anyone. Every image below that a generator produced or "
    "edited is labelled as edited; the photos it started from are labelled as originals.")


@dataclass(frozen=True)
class Section:
    """One step of the report: its status, grids and the number of images in its table."""

    name: str
    title: str
    status: str          # "ok", "failed", "missing", "not run", "no output"
    note: str = ""
    grids: tuple[Path, ...] = ()
    n_images: int = 0


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    markdown: Path
    html: Path
    smoke: bool | None
    sections: tuple[Section, ...]

    def summary(self) -> str:
        kind = {True: "SMOKE RUN (untrained generator)", False: "real run", None: "provenance unknown"}[self.smoke]
        lines = [f"report ({kind}): {self.markdown} and {self.html}"]
        for s in self.sections:
            lines.append(f"  {s.name:<20} {s.status:<9} {len(s.grids)} grid(s), {s.n_images} image(s)"
                         + (f" - {s.note}" if s.note else ""))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Collecting
# ----------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("%s unreadable (%s)", path, e)
        return None


def _images(folder: Path) -> list[Path]:
    """A folder's images, without the edits pasted into their photos (``<stem>.photo.<ext>``, see :func:`_in_photo`)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXT
                  and not p.name.startswith(".") and not p.stem.lower().endswith(_PHOTO_TAG))


_PHOTO_TAG = ".photo"


def _in_photo(result: Path | None, caption: str) -> "_Img | None":
    """The edit ``result`` pasted back into its original photo (``<stem>.photo.<ext>`` beside it), if written."""
    if result is None:
        return None
    p = next((result.with_name(result.stem + _PHOTO_TAG + e) for e in _IMAGE_EXT
              if result.with_name(result.stem + _PHOTO_TAG + e).is_file()), None)
    return _Img(p, caption, edited=True) if p else None


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.as_posix())]


def _find(images: Sequence[Path], *stems: str) -> Path | None:
    """First of ``images`` (a folder's :func:`_images`) whose stem equals one of ``stems`` (case-insensitive)."""
    by_stem = {p.stem.lower(): p for p in images}
    return next((by_stem[s.lower()] for s in stems if s.lower() in by_stem), None)


def _grids(out: Path, prefix: str) -> list[Path]:
    return sorted((p for p in _images(out / "grids") if p.name.startswith(prefix + "_")), key=_natural)


# ----------------------------------------------------------------------------------------
# Rendering helpers: a tiny document model rendered to both Markdown and HTML
# ----------------------------------------------------------------------------------------

@dataclass
class _Img:
    path: Path
    caption: str = ""
    edited: bool = False
    plot: bool = False      # a measurement plot, neither a photo nor an edited image


@dataclass
class _Doc:
    out: Path
    smoke: bool | None
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return quote(Path(os.path.relpath(path, self.out)).as_posix())

    def heading(self, level: int, text: str) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{_html.escape(text)}</h{level}>")

    def para(self, text: str, *, cls: str | None = None) -> None:
        self.md += [text if cls is None else f"> **{text}**" if cls == "banner" else f"_{text}_", ""]
        c = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{c}>{_inline_html(text)}</p>")

    def bullets(self, items: Iterable[str]) -> None:
        items = list(items)
        self.md += [f"- {i}" for i in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in items) + "</ul>")

    def label(self, img: _Img) -> str:
        if img.plot:
            return "measurement from the untrained generator, smoke run" if self.smoke else "measurement"
        if not img.edited:
            return "original"
        return "EDITED - untrained generator, smoke run" if self.smoke else "edited (StyleGAN2)"

    def caption(self, img: _Img) -> str:
        lab = self.label(img)
        if not img.caption or lab in img.caption:
            return img.caption or lab
        return f"{img.caption} ({lab})"

    def figure(self, img: _Img, *, width: int = 900) -> None:
        cap = self.caption(img)
        self.md += [f"![{cap}]({self.rel(img.path)})", "", f"*{cap}*", ""]
        self.html.append(self._img_html(img, width=width, caption=cap))

    def _img_html(self, img: _Img, *, width: int, caption: str | None = None, fixed: bool = False) -> str:
        lab = self.label(img)
        generated = img.edited or img.plot
        cls = "edited smoke" if generated and self.smoke else "edited" if generated else "original"
        badge = f'<span class="badge">{_html.escape(lab)}</span>'
        cap = _html.escape(caption if caption is not None else self.caption(img))
        return (f'<figure class="{cls}"><div class="frame">{badge}<img src="{self.rel(img.path)}" '
                f'alt="{cap}" style="{"width" if fixed else "max-width"}: {width}px"/></div>'
                f'<figcaption>{cap}</figcaption></figure>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence["_Img | str | None"]], *, cell: int = 200) -> None:
        """A table of images / text; Markdown gets a pipe table, HTML an <table> like the original report."""
        def md_cell(x: "_Img | str | None") -> str:
            if x is None:
                return "-"
            if isinstance(x, _Img):
                cap = self.caption(x)
                return f'<img src="{self.rel(x.path)}" width="{cell}" alt="{cap}"/><br>{cap}'
            return str(x).replace("|", "\\|")

        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        for r in rows:
            self.md.append("| " + " | ".join(md_cell(x) for x in r) + " |")
        self.md.append("")

        def html_cell(x: "_Img | str | None") -> str:
            if x is None:
                return "<td></td>"
            if isinstance(x, _Img):
                return f"<td>{self._img_html(x, width=cell, fixed=True)}</td>"
            return f"<td>{_html.escape(str(x))}</td>"

        head = "<tr>" + "".join(f"<th>{_html.escape(h)}</th>" for h in header) + "</tr>"
        body = "".join("<tr>" + "".join(html_cell(x) for x in r) + "</tr>" for r in rows)
        self.html.append(f'<table class="images">{head}{body}</table>')

    def details(self, summary: str, text: str) -> None:
        self.md += [f"<details><summary>{summary}</summary>", "", "```", text, "```", "", "</details>", ""]
        self.html.append(f"<details><summary>{_html.escape(summary)}</summary><pre>{_html.escape(text)}</pre></details>")


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags."""
    t = _html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ccc; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
p.banner { background: #c80000; color: #fff; padding: .8em 1em; font-weight: bold; }
p.note { color: #555; font-style: italic; }
p.status-missing, p.status-failed, p.status-norun, p.status-nooutput { background: #fff3cd; padding: .5em 1em; }
p.status-stand-ins { background: #fff3cd; padding: .5em 1em; }
table.images { border-collapse: collapse; margin: 1em 0; }
table.images td, table.images th { border: 1px solid #ddd; padding: 4px; vertical-align: top; text-align: center; }
table.status td, table.status th { border: 1px solid #ddd; padding: 2px 8px; }
figure { margin: .5em; display: inline-block; } figure img { display: block; max-width: 100%; height: auto; }
figure .frame { display: inline-block; }
figure .badge { display: block; width: fit-content; font-size: 11px; padding: 1px 4px; color: #fff; background: #555; }
figure.edited .badge { background: #1f5fbf; }
figure.smoke .badge { background: #c80000; font-weight: bold; }
figure.smoke .frame { outline: 3px solid #c80000; }
figcaption { font-size: 12px; color: #444; }
code { background: #f3f3f3; padding: 0 3px; }
"""


# ----------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------

_STEP_TITLES = {
    "01_alignment": "1. Alignment",
    "02_projection": "2. Projection into StyleGAN2 (W+): originals and projections",
    "03_style_transfer": "3. Style transfer: the style table",
    "04_expressions": "4. Expressions: the expression table",
    "05_face_swap": "5. Face swap",
    "06_directions": "6. Edit directions",
}
_GENERATIVE = ("02_projection", "03_style_transfer", "04_expressions", "05_face_swap", "06_directions")
_PROVENANCE_META = {"smoke", "weights", "device", "seed", "facelib_version", "time"}


def _smoke_state(run: Mapping | None, prov: Mapping | None) -> bool | None:
    if run is not None and "smoke" in run:
        return bool(run["smoke"])
    flags = [v.get("smoke") for k, v in (prov or {}).items() if k in _GENERATIVE and isinstance(v, Mapping)]
    if any(f is True for f in flags):
        return True
    if flags and all(f is False for f in flags):
        return False
    return None


def stand_in_hint(out: Path, step: str) -> str | None:
    """What ``step``'s notebook recorded to do for real inputs (it used random stand-ins), else None."""
    rec = (_read_json(out / "provenance.json") or {}).get(step)
    return str(rec["stand_in_hint"]) if isinstance(rec, Mapping) and rec.get("stand_in_hint") else None


def _step_status(name: str, out: Path, run: Mapping | None, has_output: bool, root: Path) -> tuple[str, str]:
    rec = next((s for s in (run or {}).get("steps", []) if s.get("name") == name), None)
    nb = root / "notebooks" / f"{name}.ipynb"
    if rec is not None:
        st = rec.get("status", "")
        if st.startswith("ok, with stand-in"):
            return "stand-ins", (f"{st}: random latents stood in for missing inputs; these images are not "
                                 "projections of photos and are stamped")
        if st == "ok":
            return ("ok", "") if has_output else ("no output", "the notebook ran but wrote nothing this report uses")
        if st == "failed":
            return "failed", f"the notebook failed: {rec.get('error') or 'see its executed copy'}" + (
                f"; executed copy: `{rec['output']}`" if rec.get("output") else "")
        if st == "missing":
            return "missing", f"no notebook for this step ({rec.get('error') or nb.name + ' does not exist'})"
    if has_output and (hint := stand_in_hint(out, name)):
        return "stand-ins", (f"random latents stood in for missing inputs ({hint}); "
                             "these images are not projections of photos and are stamped")
    if has_output:
        return "ok", ""
    if not nb.is_file():
        return "missing", f"no notebook for this step (notebooks/{name}.ipynb does not exist), so it has no output"
    return "not run", f"no output in {out} yet: run notebooks/{name}.ipynb (or `python -m facelib demo`)"


def build_report(out_dir: "str | os.PathLike[str]" = "out", *, title: str = "facelib report") -> Report:
    """Write ``out/report.md`` and ``out/report.html`` from the files in ``out/`` (nothing is run).

    Args:
        out_dir: the results folder.
        title: the report's title.
    Returns:
        A :class:`Report` (paths, smoke state, per-step sections).
    """
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    run = _read_json(out / "run.json")
    prov = _read_json(out / "provenance.json") or {}
    smoke = _smoke_state(run, prov)
    doc = _Doc(out, smoke)
    sections: list[Section] = []

    # Header
    doc.heading(1, title)
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if smoke:
        doc.para(f"{SMOKE_STAMP}. The generative steps (2-5) used a small generator with random weights and a few "
                 "optimisation steps: their images are not faces and show only that the pipeline runs end to end. "
                 "Alignment (step 1) is real.", cls="banner")
        doc.para(REAL_WEIGHTS_HELP)
    elif smoke is None:
        doc.para("Provenance unknown: out/ holds no run record (out/run.json) or notebook provenance "
                 "(out/provenance.json), so this report cannot say which generator made these images.",
                 cls="banner")
    facts = [f"built {now} by facelib {__version__} from `{out}` (`python -m facelib report`; nothing was re-run)"]
    if run:
        kind = "smoke run, untrained generator" if run.get("smoke") else f"real run, generator `{run.get('weights')}`"
        facts.append(f"last `python -m facelib demo`: {run.get('finished', '?')}, {kind}, device "
                     f"{run.get('device', '?')}, seed {run.get('seed', '?')}, {run.get('seconds', 0):.0f} s")
    for step, info in sorted(prov.items()):
        if isinstance(info, Mapping):
            w = "untrained smoke generator" if info.get("smoke") else (info.get("weights") or "?")
            facts.append(f"{step}: generator {w}, device {info.get('device', '?')}, {info.get('time', '')}")
    doc.bullets(facts)
    if run and run.get("steps"):
        doc.md += ["| step | status | time | executed notebook |", "|---|---|---|---|"]
        rows_html = []
        for s in run["steps"]:
            out_nb = s.get("output") or "-"
            doc.md.append(f"| {s.get('name')} | {s.get('status')} | {s.get('seconds', 0):.1f} s | {out_nb} |")
            rows_html.append(f"<tr><td>{_html.escape(str(s.get('name')))}</td><td>{_html.escape(str(s.get('status')))}"
                             f"</td><td>{s.get('seconds', 0):.1f} s</td><td>{_html.escape(str(out_nb))}</td></tr>")
        doc.md.append("")
        doc.html.append('<table class="status"><tr><th>step</th><th>status</th><th>time</th>'
                        f'<th>executed notebook</th></tr>{"".join(rows_html)}</table>')
    doc.heading(2, "Responsible use")
    doc.para(RESPONSIBLE_USE)

    builders = {
        "01_alignment": _alignment,
        "02_projection": _projection,
        "03_style_transfer": _styles,
        "04_expressions": _expressions,
        "05_face_swap": _face_swap,
        "06_directions": _directions,
    }
    for name, fn in builders.items():
        doc.heading(2, _STEP_TITLES[name])
        grids = _grids(out, name[:2])
        mark = len(doc.md), len(doc.html)
        n_images = fn(doc, out)
        body_md, body_html = doc.md[mark[0]:], doc.html[mark[1]:]
        del doc.md[mark[0]:], doc.html[mark[1]:]
        status, note = _step_status(name, out, run, bool(grids or n_images), root)
        if status != "ok":
            doc.para(f"{status.upper()}: {note}", cls="status-" + status.replace(" ", ""))
        if smoke and name in _GENERATIVE and (grids or n_images):
            doc.para(f"{SMOKE_STAMP}: these images come from the untrained generator.", cls="banner")
        info = prov.get(name) if isinstance(prov.get(name), Mapping) else {}
        facts = [f"{k} {_fmt(v, '.4g') if isinstance(v, float) else v}" for k, v in sorted(info.items())
                 if k not in _PROVENANCE_META and isinstance(v, (int, float, str, bool)) and str(v) != ""]
        if facts:
            doc.para("Recorded by the notebook: " + _join_whole(facts, 600) + ".", cls="note")
        for g in grids:
            doc.figure(_Img(g, f"grid {g.name}", edited=name in _GENERATIVE))
        doc.md += body_md
        doc.html += body_html
        sections.append(Section(name, _STEP_TITLES[name], status, note, tuple(grids), n_images))

    md_path, html_path = out / "report.md", out / "report.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(doc.md).rstrip() + "\n")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(doc.html) + "\n</body></html>\n")
    with atomic_path(html_path) as tmp:
        tmp.write_text(page)
    return Report(md_path, html_path, smoke, tuple(sections))


# ----------------------------------------------------------------------------------------
# Sections (each returns the number of per-image files shown)
# ----------------------------------------------------------------------------------------

def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _aligned_dir(out: Path, step: str = "01_alignment") -> Path:
    """The aligned crops ``step`` used (recorded in ``out/provenance.json``; 02's are the ones it
    projected), else 01's, else ``out/aligned``."""
    default = recorded_folder(out, "01_alignment", "aligned_dir", out / "aligned")
    return recorded_folder(out, step, "aligned_dir", default) if step != "01_alignment" else default


def _shown(out: Path, folder: Path) -> str:
    """``folder`` as the report names it: ``out/<name>`` inside ``out``, else the path."""
    return f"out/{folder.name}" if folder.parent == out else str(folder)


def _alignment(doc: _Doc, out: Path) -> int:
    base = _aligned_dir(out)
    people = sorted((d for d in base.iterdir() if d.is_dir()), key=_natural) if base.is_dir() else []
    rows = []
    width = 0
    for d in people:
        imgs = sorted(_images(d), key=_natural)
        rows.append([d.name, *[_Img(p, f"{d.name}/{p.name}, aligned original") for p in imgs]])
        width = max(width, len(imgs))
    if not rows:
        return 0
    doc.para(f"FFHQ-aligned crops (`{_shown(out, base)}/<person>/<n>.jpg`), the inputs of every later step.")
    doc.table(["person"] + [str(i) for i in range(width)], [r + [None] * (width + 1 - len(r)) for r in rows], cell=160)
    return sum(len(r) - 1 for r in rows)


def _projection(doc: _Doc, out: Path) -> int:
    latents = recorded_folder(out, "02_projection", "latents_dir", out / "latents")  # its last run's
    aligned = _aligned_dir(out, "02_projection")
    if not latents.is_dir():
        return 0
    rows = []
    card_metrics, card_names, smoke = [], [], False
    for sidecar in sorted(latents.rglob("*.json"), key=_natural):
        if sidecar.parent.name.startswith(".") or "cache" in sidecar.parts[len(out.parts):]:
            continue
        meta = _read_json(sidecar) or {}
        if meta.get("format") != "facelib.projection":
            continue
        card_metrics += list(meta.get("metrics") or [])
        card_names += [sidecar.relative_to(latents).with_suffix("").as_posix()] * len(meta.get("metrics") or [])
        smoke = smoke or str(meta.get("weights_sha256") or "").startswith("smoke-")
        rel = sidecar.relative_to(latents).with_suffix("")
        render = next((sidecar.with_suffix(e) for e in _IMAGE_EXT if sidecar.with_suffix(e).is_file()), None)
        original = next((aligned / rel.with_suffix(e) for e in _IMAGE_EXT
                         if (aligned / rel.with_suffix(e)).is_file()), None)
        m = (meta.get("metrics") or [{}])[0]
        cfg = meta.get("config") or {}
        tune = _read_json(sidecar.with_name(sidecar.stem + ".tune.json")) or {}
        tm = (tune.get("metrics") or [{}])[0] if tune.get("format") == "facelib.tuning" else {}
        tuned = next((sidecar.with_name(sidecar.stem + ".tune" + e) for e in _IMAGE_EXT
                      if sidecar.with_name(sidecar.stem + ".tune" + e).is_file()), None)
        rows.append([rel.as_posix(), _Img(original) if original else None,
                     _Img(render, edited=True) if render else None,
                     f"{_fmt(m.get('psnr'), '.2f')} dB", _fmt(m.get("lpips"), ".3f"),
                     _fmt(m.get("id_similarity"), ".3f"),
                     f"{meta.get('steps_done', cfg.get('steps', '?'))} steps"
                     + (" from the encoder" if cfg.get("init") == "encoder" else "")
                     + (f", {m['seconds']:.1f} s" if isinstance(m.get("seconds"), (int, float)) else ""),
                     _Img(tuned, "tuned generator", edited=True) if tuned else None,
                     (f"PSNR {_fmt(tm.get('psnr_before'), '.2f')} -> {_fmt(tm.get('psnr'), '.2f')} dB, LPIPS "
                      f"{_fmt(tm.get('lpips_before'), '.3f')} -> {_fmt(tm.get('lpips'), '.3f')}") if tm else "-"])
    if not rows:
        return 0
    header = ["image", "original (aligned)", "projection", "PSNR", "LPIPS", "identity", "optimisation"]
    if any(r[-1] != "-" for r in rows):
        header += ["pivotal tuning", "before -> after tuning"]
    else:
        rows = [r[:-2] for r in rows]
    doc.para(f"Originals and their projections (`{_shown(out, latents)}/<person>/<n>.png`; the W+ latents are the `.pt` files "
             "beside them, settings and metrics in the `.json` sidecars; a pivotal tuning of the generator for the "
             "photo is `<n>.tune.pt` with its rendering `<n>.tune.png`).")
    doc.table(header, rows)

    card = quality_card(card_metrics, names=card_names, smoke=smoke)
    card_header, card_rows = card.table(per_image=False)
    doc.para("Quality card: this run's means beside the published figures for real FFHQ weights.")
    doc.table(card_header, card_rows)
    doc.para(card.note())
    return len(rows)


def _stand_ins(out: Path, step: str) -> set[str]:
    """What random latents stood in for in a step (``stand_ins`` in ``out/provenance.json``)."""
    info = (_read_json(out / "provenance.json") or {}).get(step)
    got = info.get("stand_ins") if isinstance(info, Mapping) else None
    return {str(x).lower() for x in got} if isinstance(got, list) else set()


_STAND_IN = "random latent standing in (no usable photo)"


def _styles(doc: _Doc, out: Path) -> int:
    folder = out / "styles"
    random_for = _stand_ins(out, "03_style_transfer")
    imgs = _images(folder)
    if not imgs:
        return 0
    results = {m.group(2) for p in imgs if (m := re.match(r"^(transferr?ed)_(.+)$", p.stem))}
    # a style has a projection "<style>_style"; results on further faces are "transferred_<style>_<face>"
    cols = sorted((n for n in results if _find(imgs, f"{n}_style")), key=str.lower) or sorted(results, key=str.lower)
    if not cols:
        doc.para(f"{len(imgs)} image(s) in `out/styles/` (no `transferred_<style>.jpg` results to tabulate).")
        return len(imgs)
    photo_row = [_Img(p, f"style photo {n}") if (p := _find(imgs, n, f"{n}_photo")) else None for n in cols]
    what = _STAND_IN if "styles" in random_for else "projection"
    word = "stand-in (random latent)" if random_for or stand_in_hint(out, "03_style_transfer") else "projection"
    proj_row = [_Img(p, f"{n}: {what}", edited=True) if (p := _find(imgs, f"{n}_style")) else None for n in cols]
    res_row = [_Img(p, f"transferred {n}", edited=True) if (p := _find(imgs, f"transferred_{n}", f"transfered_{n}"))
               else None for n in cols]
    in_photo = [_in_photo(_find(imgs, f"transferred_{n}", f"transfered_{n}"), f"transferred {n}, in the photo")
                for n in cols]
    rows = [["style photo", *photo_row], [f"style ({word})", *proj_row], ["transferred onto the face", *res_row],
            ["in the photo", *in_photo]]
    rows = [r for r in rows if any(isinstance(x, _Img) for x in r[1:])]
    doc.para("Style table (as in the original report): the style photos, their projections, and the style rows "
             "of each mixed into the projected face (`out/styles/`).")
    doc.table(["", *cols], rows)
    for plot in (p for p in imgs if p.stem.startswith("row_effects")):
        doc.figure(_Img(plot, f"what each W+ row changes ({plot.name})", plot=True), width=700)
    return sum(isinstance(x, _Img) for r in rows for x in r)


def _expressions(doc: _Doc, out: Path) -> int:
    folder = out / "expressions"
    imgs = _images(folder)
    if not imgs:
        return 0
    results = {m.group(1).lower() for p in imgs if (m := re.match(r"^transferr?ed_(.+)$", p.stem))
               and not m.group(1).endswith(("_unmasked", "_failed", "_succsess", "_success"))}
    # an expression has a projection "<expression>.jpg"; results on further targets add "_<target>"
    emotions = sorted(e for e in results if _find(imgs, e)) or sorted(e for e in results if "_" not in e)
    if not emotions:
        doc.para(f"{len(imgs)} image(s) in `out/expressions/` (no `transferred_<expression>.jpg` results to tabulate).")
        return len(imgs)
    order = ["neutral", "happy", "sad", "fear"]
    emotions.sort(key=lambda e: (order.index(e) if e in order else len(order), e))
    cols = ["neutral", *emotions]
    random_for = _stand_ins(out, "04_expressions")
    word = "stand-in (random latent)" if random_for or stand_in_hint(out, "04_expressions") else "projection"
    photo = [(_Img(p, f"{c} photo") if (p := _find(imgs, f"{c}_photo", f"{c} copy")) else None) for c in cols]
    proj = [(_Img(p, f"{c}: {_STAND_IN if c in random_for else 'projection'}", edited=True)
             if (p := _find(imgs, c)) else None) for c in cols]
    target = _find(imgs, "target") or (out / "init_style.jpg" if (out / "init_style.jpg").is_file() else None)
    target_what = "random latent standing in (no projection)" if "targets" in random_for else "projection"
    res = [_Img(target, f"target ({target_what})", edited=True) if target else None] + [
        (_Img(p, f"{c} transferred", edited=True) if (p := _find(imgs, f"transferred_{c}", f"transfered_{c}"))
         else None) for c in emotions]
    unmasked = [None] + [(_Img(p, f"{c}, every row", edited=True)
                          if (p := _find(imgs, f"transferred_{c}_unmasked", f"transfered_{c}_failed")) else None)
                         for c in emotions]
    in_photo = [None] + [_in_photo(_find(imgs, f"transferred_{c}", f"transfered_{c}"), f"{c}, in the photo")
                         for c in emotions]
    rows = [["reference photo", *photo], [f"reference ({word})", *proj], ["onto the target", *res],
            ["same delta on every row", *unmasked], ["in the photo", *in_photo]]
    rows = [r for r in rows if any(isinstance(x, _Img) for x in r[1:])]
    doc.para("Expression table (as in the original report): reference photos, their projections, and each "
             "expression's masked W+ delta added to the target; the last row shows the delta on every row, "
             "the artefacts the masks remove (`out/expressions/`).")
    doc.table(["", *cols], rows)
    comparison = _find(imgs, "comparison")
    if comparison:
        doc.para("The same deltas on every row and on the masked rows (in the original report: "
                 "`transfered_fear_failed.jpg` vs `transfered_fear_succsess.jpg`):")
        doc.figure(_Img(comparison, "unmasked vs masked", edited=True), width=700)
    for plot in sorted((p for p in imgs if p.stem.startswith("row_effects")), key=_natural):
        doc.figure(_Img(plot, f"what each W+ row of the delta changes ({plot.name})", plot=True), width=700)
    return sum(isinstance(x, _Img) for r in rows for x in r)


def _aligned_of(out: Path, person: str) -> Path | None:
    d = _aligned_dir(out, "02_projection") / person
    imgs = sorted(_images(d), key=_natural)
    return imgs[0] if imgs else None


def _named(out: Path, names: Any) -> Path | None:
    """The aligned ``<name>.<ext>`` (:func:`_aligned_dir` of 02) for the first entry of a sidecar's name list ("person/2")."""
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        return None
    base = _aligned_dir(out, "02_projection") / names[0]
    return next((base.with_suffix(e) for e in _IMAGE_EXT if base.with_suffix(e).is_file()), None)


def _join_whole(items: Iterable[str], limit: int) -> str:
    """``items`` comma-separated, whole items only, up to ``limit`` characters (no cut item, no trailing comma)."""
    parts: list[str] = []
    for item in items:
        if len(", ".join([*parts, item])) > limit:
            break
        parts.append(item)
    return ", ".join(parts)


def _metric_text(m: Mapping[str, Any], limit: int = 200) -> str:
    """The "name value" pairs of a swap's numeric metrics, as much as fits in ``limit`` characters."""
    return _join_whole((f"{k} {_fmt(v, '.3f')}" for k, v in m.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)), limit)


def _face_swap(doc: _Doc, out: Path) -> int:
    folder = recorded_folder(out, "05_face_swap", "swap_dir", out / "face_swap")  # its last run's
    imgs = _images(folder)
    results = [p for p in imgs if "_on_" in p.stem]
    if not results:
        return 0
    from .swap_judge import swap_metrics_text  # torch: only when there are swaps to describe

    rows = []
    for p in sorted(results, key=_natural):
        source, target = p.stem.split("_on_", 1)
        meta = _read_json(p.with_suffix(".json")) or {}
        src = _find(imgs, f"{p.stem}_source") or _named(out, meta.get("source_names")) or _aligned_of(out, source)
        tgt = _find(imgs, f"{p.stem}_target") or _named(out, meta.get("target_names")) or _aligned_of(out, target)
        m = meta.get("metrics")
        m = m[0] if isinstance(m, list) and m else m if isinstance(m, Mapping) else {}
        unchanged = bool(m.get("unchanged", m.get("best_step", 1) in (0, -1)))
        facts = swap_metrics_text(m, unchanged=unchanged) or _metric_text(m)  # older files: every figure
        if unchanged and not facts.startswith("UNCHANGED"):
            facts = "UNCHANGED: the swap did nothing (best step 0). " + facts
        rows.append([_Img(src, f"source {source}") if src else None,
                     _Img(tgt, f"target {target}") if tgt else None,
                     _Img(p, f"{source} on {target}" + (": UNCHANGED, the swap did nothing" if unchanged else ""),
                          edited=True), _in_photo(p, f"{source} on {target}, in the photo"),
                     facts or "-"])
    doc.para(f"Face swap (`{_shown(out, folder)}/<source>_on_<target>.jpg`): the source's identity on the target, "
             "optimised with an ArcFace identity loss.")
    if not any(isinstance(r[3], _Img) for r in rows):
        rows = [r[:3] + r[4:] for r in rows]
        doc.table(["source", "target", "result", "metrics"], rows)
    else:
        doc.table(["source", "target", "result", "in the photo", "metrics"], rows)
    return len(rows)


def _directions(doc: _Doc, out: Path) -> int:
    files = []
    for meta_path in sorted((out / "directions").glob("*.json")):
        info = _read_json(meta_path)
        if not isinstance(info, Mapping) or "method" not in info:
            continue
        rows = info.get("rows")
        acc = [a for a in (info.get("accuracy") or []) if isinstance(a, (int, float))]
        files.append(f"`{meta_path.with_suffix('.pt').name}`: {info.get('method')}, {info.get('k', '?')} "
                     f"direction(s), rows {'all' if rows is None else rows}"
                     + (f", held-out accuracy {_fmt(acc[0], '.3f')}" if acc else "")
                     + f", generator {str(info.get('weights_sha256') or '?')[:16]}")
    edits = sorted((p for p in _images(out / "directions" / "edits") if p.stem != "grid"), key=_natural)
    if files:
        doc.para("Direction files (`out/directions/<name>.pt` with a `.json` sidecar), reusable with "
                 "`python -m facelib edit LATENT.pt --direction FILE`:")
        doc.bullets(files)
    if edits:
        doc.para("Chosen edits (`out/directions/edits/`): the target moved along a direction; the name "
                 "says the direction and the strength in standard deviations of w along it.")
        pasted = [_in_photo(p, f"{p.stem}, in the photo") for p in edits]
        if any(pasted):
            doc.table(["edit", "in the photo", "file"],
                      [[_Img(p, p.stem, edited=True), photo, p.name] for p, photo in zip(edits, pasted)])
        else:
            doc.table(["edit", "file"], [[_Img(p, p.stem, edited=True), p.name] for p in edits])
    return len(edits)
