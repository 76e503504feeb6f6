"""facelib.report: the report is built from the files in out/ alone, labels edited images and smoke runs."""
from __future__ import annotations

import html.parser
import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from facelib import report as R
from facelib.cli import main
from facelib.stamps import REAL_WEIGHTS_HELP, SMOKE_STAMP


def _img(path: Path, color=(120, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path


def _fake_out(out: Path, *, smoke: bool | None, swap: bool = True) -> Path:
    for person, n in (("AJoly", 3), ("LDCaprio", 1)):
        for i in range(n):
            _img(out / "aligned" / person / f"{i}.jpg")
    for person in ("AJoly", "LDCaprio"):
        _img(out / "latents" / person / "0.png")
        (out / "latents" / person / "0.json").write_text(json.dumps({
            "format": "facelib.projection", "metrics": [{"psnr": 27.25, "lpips": 0.123}],
            "config": {"steps": 500}, "steps_done": 500}))
    (out / "cache" / "projection" / "ab").mkdir(parents=True)
    (out / "cache" / "projection" / "ab" / "x.json").write_text(json.dumps({"format": "facelib.projection"}))
    for name in ("bad_trip1", "green"):
        _img(out / "styles" / f"{name}.jpg")
        _img(out / "styles" / f"{name}_style.jpg")
        _img(out / "styles" / f"transferred_{name}.jpg")
        _img(out / "styles" / f"transferred_{name}_LDCaprio.jpg")
    _img(out / "styles" / "row_effects.png")
    for e in ("neutral", "happy", "sad", "fear"):
        _img(out / "expressions" / f"{e}.jpg")
        _img(out / "expressions" / f"{e}_photo.jpg")
        if e != "neutral":
            _img(out / "expressions" / f"transferred_{e}.jpg")
            _img(out / "expressions" / f"transferred_{e}_unmasked.jpg")
    _img(out / "expressions" / "target.jpg")
    _img(out / "expressions" / "comparison.jpg")
    if swap:
        _img(out / "face_swap" / "AJoly_on_LDCaprio.jpg")
        (out / "face_swap" / "AJoly_on_LDCaprio.json").write_text(json.dumps({"metrics": [{"id_similarity": 0.61}],
                                                                       "source_names": ["AJoly/2"],
                                                                       "target_names": ["LDCaprio/0"]}))
    for k, name in enumerate(["01_alignment", "02_projection", "03_style_transfer", "04_expressions",
                              "05_face_swap"][: 5 if swap else 4], 1):
        _img(out / "grids" / f"{name}.jpg")
    if smoke is not None:
        steps = [{"name": n, "status": "ok", "seconds": 1.5, "output": str(out / "notebooks" / f"{n}.ipynb")}
                 for n in ("01_alignment", "02_projection", "03_style_transfer", "04_expressions")]
        steps.append({"name": "05_face_swap", "status": "ok" if swap else "missing", "seconds": 0.0,
                      "error": None if swap else "notebooks/05_face_swap.ipynb does not exist"})
        (out / "run.json").write_text(json.dumps({"smoke": smoke, "weights": None if smoke else "data/ffhq.pt",
                                                  "device": "cpu", "seed": 0, "seconds": 12.0, "steps": steps}))
        (out / "provenance.json").write_text(json.dumps({"02_projection": {"smoke": smoke, "mean_psnr": 27.25,
                                                                           "config": {"steps": 500}}}))
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _html_srcs(path: Path) -> list[str]:
    p = _Links()
    p.feed(path.read_text())
    return p.srcs


def test_smoke_report_tables_stamps_and_labels(tmp_path: Path) -> None:
    out = _fake_out(tmp_path / "out", smoke=True)
    rep = R.build_report(out)
    assert rep.smoke is True
    assert [s.status for s in rep.sections[:5]] == ["ok"] * 5
    assert [len(s.grids) for s in rep.sections[:5]] == [1] * 5
    md, page = rep.markdown.read_text(), rep.html.read_text()
    for text in (md, page):
        assert SMOKE_STAMP in text
        assert "attach a pretrained StyleGAN2" in text  # the instructions for real weights
        assert "consent" in text.lower() or "agreed" in text
    # five grids, each once, as relative links that resolve
    srcs = _html_srcs(rep.html)
    for name in ("01_alignment", "02_projection", "03_style_transfer", "04_expressions", "05_face_swap"):
        assert srcs.count(f"grids/{name}.jpg") == 1
        assert f"](grids/{name}.jpg)" in md
    assert all((out / unquote(s)).is_file() for s in srcs)
    # the original report's tables
    for rel in ("aligned/AJoly/2.jpg", "latents/AJoly/0.png", "styles/bad_trip1.jpg", "styles/bad_trip1_style.jpg",
                "styles/transferred_green.jpg", "expressions/happy_photo.jpg", "expressions/transferred_fear.jpg",
                "expressions/transferred_sad_unmasked.jpg", "expressions/target.jpg", "face_swap/AJoly_on_LDCaprio.jpg",
                "expressions/comparison.jpg", "styles/row_effects.png"):
        assert rel in srcs, rel
    assert srcs.count("aligned/AJoly/2.jpg") == 2  # alignment table + the swap's source (from its sidecar)
    assert "styles/transferred_bad_trip1_LDCaprio.jpg" not in srcs  # one column per style, not per face
    assert "cache/" not in md
    assert "27.25 dB" in md and "0.123" in md and "id_similarity 0.610" in md
    # every generated image is labelled, the photos are labelled as originals
    # edited: the grids of 02-05 (4), two projections, two style projections + two transfers, the row-effects
    # plot, four expression projections + the target + three transfers + three unmasked + the comparison,
    # one swap; original: the 01 grid, four aligned crops, two projection originals, two style photos, four
    # expression photos, the swap's source and target
    assert page.count('class="edited smoke"') == 4 + 2 + 4 + 1 + 12 + 1
    assert page.count('class="original"') == 1 + 4 + 2 + 2 + 4 + 2
    assert len(srcs) == 24 + 15  # every image is one or the other
    assert "EDITED - untrained generator, smoke run" in md


def test_real_report_and_missing_step(tmp_path: Path) -> None:
    out = _fake_out(tmp_path / "out", smoke=False, swap=False)
    rep = R.build_report(out)
    assert rep.smoke is False
    md = rep.markdown.read_text()
    assert SMOKE_STAMP not in md and "edited (StyleGAN2)" in md
    swap = next(s for s in rep.sections if s.name == "05_face_swap")
    assert (swap.name, swap.status, swap.grids) == ("05_face_swap", "missing", ())
    assert "MISSING" in md and "05_face_swap.ipynb does not exist" in md
    assert "| 05_face_swap | missing |" in md


def test_report_without_run_record_and_cli_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("report must not run notebooks"))
    out = _fake_out(tmp_path / "out", smoke=None)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["report", "--out", str(out)]) == 0
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert set(after) - set(before) == {out / "report.md", out / "report.html"}
    assert all(after[p] == t for p, t in before.items())
    md = (out / "report.md").read_text()
    assert "Provenance unknown" in md


def test_report_on_empty_out(tmp_path: Path) -> None:
    rep = R.build_report(tmp_path / "nothing")
    assert rep.html.is_file() and rep.markdown.is_file()
    assert all(s.status in ("not run", "missing") for s in rep.sections)
    assert all(s.n_images == 0 and not s.grids for s in rep.sections)
    assert REAL_WEIGHTS_HELP not in rep.markdown.read_text()  # provenance unknown: no smoke claim either way


def test_report_shows_tuning_and_edits_in_the_photo(tmp_path: Path) -> None:
    out = _fake_out(tmp_path / "out", smoke=False)
    lat = out / "latents" / "AJoly"
    _img(lat / "0.tune.png")
    (lat / "0.tune.json").write_text(json.dumps({"format": "facelib.tuning", "metrics": [
        {"psnr_before": 21.5, "psnr": 26.75, "lpips_before": 0.2, "lpips": 0.08}]}))
    _img(out / "styles" / "transferred_green.photo.jpg")
    _img(out / "expressions" / "transferred_happy.photo.jpg")
    _img(out / "face_swap" / "AJoly_on_LDCaprio.photo.jpg")
    md = R.build_report(out).markdown.read_text()
    assert "PSNR 21.50 -> 26.75 dB, LPIPS 0.200 -> 0.080" in md and "latents/AJoly/0.tune.png" in md
    assert md.count("in the photo") >= 3
    for rel in ("styles/transferred_green.photo.jpg", "expressions/transferred_happy.photo.jpg",
                "face_swap/AJoly_on_LDCaprio.photo.jpg"):
        assert rel in md, rel
    # pasted photos are not mistaken for results of their own
    assert "green.photo" not in md.replace("transferred_green.photo.jpg", "")
