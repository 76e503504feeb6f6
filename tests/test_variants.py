"""Reruns with other settings write beside finished results, never over them (facelib.variants)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from facelib.align import load_image
from facelib.grids import to_pil
from facelib.projection import load_projection
from facelib.projection_folder import project_folder
from facelib.variants import (beside_folder, choose_beside, other_settings, recorded_folder, settings_tag)

FAST = dict(lpips=None, mse_weight=1.0, progress=False)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _photos(G, folder: Path, n: int = 2) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(n, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1))
    (folder / "ann").mkdir(parents=True)
    for i, im in enumerate(to_pil(x.clamp(-1, 1))):
        im.save(folder / "ann" / f"{i}.png")


def test_settings_tag_is_short_deterministic_and_order_free():
    a = settings_tag({"config": {"steps": 50, "lr": 0.1}, "generator": "ab"})
    assert len(a) == 8 and int(a, 16) >= 0
    assert a == settings_tag({"generator": "ab", "config": {"lr": 0.1, "steps": 50}})
    assert a != settings_tag({"config": {"steps": 1000, "lr": 0.1}, "generator": "ab"})
    assert beside_folder("out/latents", {"x": (1, 2)}) == Path("out") / f"latents@{settings_tag({'x': [1, 2]})}"


def test_choose_beside_and_other_settings(tmp_path):
    side = tmp_path / "a.json"
    side.write_text(json.dumps({"format": "f", "config": {"steps": 200, "rows": [0, 1]}, "weights_sha256": "g1"}))
    same = {"config": {"steps": 200, "rows": (0, 1)}, "weights_sha256": "g1"}
    assert other_settings(side, same, fmt="f") is None
    assert other_settings(side, {**same, "config": {"steps": 25, "rows": (0, 1)}}) == \
        "made with other settings: steps 200 (now 25)"
    assert "weights_sha256" in other_settings(side, {**same, "weights_sha256": "g2"})
    assert other_settings(side, {"config": {}}, fmt="other format") is None  # not this kind of result
    assert other_settings(tmp_path / "missing.json", same) is None
    side.write_text(json.dumps({"config": {"steps": 1}, "interrupted": True}))
    assert other_settings(side, same) is None  # unfinished: redone, not kept
    usual = tmp_path / "face_swap"
    assert choose_beside(usual, same, []).folder == usual and not choose_beside(usual, same, []).beside
    choice = choose_beside(usual, same, ["made with other settings: steps 200 (now 25)"] * 3)
    assert choice.beside and choice.folder == beside_folder(usual, same)
    assert f"{usual} holds 3 result(s) made with other settings (steps 200 (now 25))" in choice.note
    assert str(choice.folder) in choice.note and "overwrite=True" in choice.note


def test_project_folder_writes_beside_results_of_other_settings(small_generator, tmp_path, single_thread,
                                                                monkeypatch):
    import facelib.projection_folder as pf

    G = small_generator
    src, dst = tmp_path / "aligned", tmp_path / "latents"
    _photos(G, src)
    first = project_folder(src, dst, G, steps=2, **FAST)
    assert len(first.written) == 2 and first.dst == dst
    before = _hashes(dst)

    other = project_folder(src, dst, G, steps=3, beside=True, **FAST)
    sibling = other.dst
    assert sibling.parent == tmp_path and sibling.name.startswith("latents@") and len(sibling.name) == 8 + 8
    assert _hashes(dst) == before  # the finished 2-step results are byte-identical
    assert sorted(p.relative_to(sibling).as_posix() for p in other.written) == ["ann/0.pt", "ann/1.pt"]
    assert load_projection(sibling / "ann" / "0.pt").config.steps == 3 and not other.kept
    assert any(f"{dst} holds 2 result(s) made with other settings (steps 2 (now 3))" in n and str(sibling) in n
               for n in other.notes)
    assert str(sibling) in other.summary()

    again = project_folder(src, dst, G, steps=3, beside=True, **FAST)  # same settings: the same sibling
    assert again.dst == sibling and again.written == [] and len(again.skipped) == 2
    reads = []
    monkeypatch.setattr(pf, "load_image", lambda p: reads.append(p) or load_image(p))
    back = project_folder(src, dst, G, steps=2, beside=True, **FAST)  # the first settings: dst itself
    assert sorted(reads) == sorted(src.rglob("*.png"))  # each image read once to compare and skip it
    assert back.dst == dst and back.written == [] and len(back.skipped) == 2 and not back.notes
    assert _hashes(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "latents", sibling.name]

    replaced = project_folder(src, dst, G, steps=3, beside=True, overwrite=True, **FAST)
    assert replaced.dst == dst and len(replaced.written) == 2
    assert load_projection(dst / "ann" / "0.pt").config.steps == 3


def test_project_folder_beside_with_another_generator_and_inside_the_source(tmp_path, single_thread):
    from tests.conftest import make_small_generator

    G, H = make_small_generator(0), make_small_generator(1)
    src = tmp_path / "aligned"
    _photos(G, src, n=1)
    dst = src / "latents"  # output (and its siblings) inside the input folder: renderings, not inputs
    project_folder(src, dst, G, steps=1, **FAST)
    before = _hashes(dst)
    res = project_folder(src, dst, H, steps=1, beside=True, **FAST)
    assert res.dst != dst and res.dst.parent == src and len(res.written) == 1
    assert any("another generator" in n for n in res.notes) and _hashes(dst) == before
    again = project_folder(src, dst, H, steps=1, beside=True, **FAST)
    assert again.written == [] and len(again.skipped) == 1 and not again.failed  # no rendering became an input
    kept = project_folder(src, dst, H, steps=1, **FAST)  # without beside: kept and listed, as before
    assert kept.dst == dst and len(kept.kept) == 1 and kept.nothing_done


def test_latents_dir_follows_the_recorded_folder(tmp_path):
    from facelib.session import NotebookSetup

    out = tmp_path / "out"
    S = NotebookSetup(step="03_style_transfer", out=out, smoke=True, device="cpu", seed=0, weights=None,
                      inventory=None)
    assert S.latents_dir() == out / "latents"  # nothing recorded
    out.mkdir()
    rec = NotebookSetup(step="02_projection", out=out, smoke=True, device="cpu", seed=0, weights=None, inventory=None)
    rec.record(latents_dir=str(out / "latents@0123abcd"))
    assert S.latents_dir() == out / "latents"  # recorded but absent: the usual folder
    (out / "latents@0123abcd").mkdir()
    assert S.latents_dir() == out / "latents@0123abcd"
    rec.record(latents_dir="elsewhere/out/latents@0123abcd")  # relative to another working folder: found in out
    assert S.latents_dir() == out / "latents@0123abcd"
    assert recorded_folder(out, "02_projection", "aligned_dir", out / "aligned") == out / "aligned"


def test_swap_folder_keeps_swaps_of_other_settings(small_generator, tmp_path):
    from facelib.swap import SwapConfig, SwapResult, save_swaps
    from facelib.swap_pairs import swap_folder

    G = small_generator
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(0)))
        wplus = w[:, None].repeat(1, G.n_latent, 1)
        img = G.synthesis(wplus).clamp(-1, 1)

    def swap(steps: int) -> SwapResult:
        return SwapResult(wplus=wplus, target_wplus=wplus, noises=[], images=img, target_images=img,
                          face_masks=torch.ones(1, 1, 32, 32), mask_kinds=["ellipse"], metrics=[{"best_step": 1}],
                          history=[{}], config=SwapConfig(steps=steps, rows=(0, 1)), source_names=["a/0"],
                          target_names=["b/0"], weights_sha256="g", steps_done=steps)

    usual, names = tmp_path / "face_swap", ["a_0_on_b_0"]
    first = swap_folder(swap(200), usual, names)
    assert first.folder == usual and first.note is None
    save_swaps(swap(200), [first.folder / "a_0_on_b_0.jpg"])
    before = _hashes(usual)
    assert sorted(before) == ["a_0_on_b_0.jpg", "a_0_on_b_0.json", "a_0_on_b_0.pt"]

    rerun = swap_folder(swap(25), usual, names)
    assert rerun.beside and rerun.folder.name.startswith("face_swap@") and "steps 200 (now 25)" in rerun.note
    written = save_swaps(swap(25), [rerun.folder / f"{n}.jpg" for n in names])
    assert written == [rerun.folder / "a_0_on_b_0.jpg"] and _hashes(usual) == before
    assert swap_folder(swap(25), usual, names).folder == rerun.folder  # same settings, same folder
    assert swap_folder(swap(200), usual, names).folder == usual  # the first settings: the usual folder
    assert swap_folder(swap(25), usual, names, overwrite=True).folder == usual
    assert swap_folder(swap(25), usual, ["other_pair"]).folder == usual  # no finished swap of this pair
    # same swap settings, but the target was projected again (another latent): kept, written beside
    moved = swap(200)
    moved = SwapResult(**{**moved.__dict__, "target_wplus": wplus + 0.01})
    again = swap_folder(moved, usual, names)
    assert again.beside and "another projection of the target" in again.note
    assert again.folder != rerun.folder and _hashes(usual) == before


def test_report_reads_the_recorded_latents(tmp_path):
    from facelib.report import build_report
    from facelib.session import NotebookSetup

    out = tmp_path / "out"
    for folder, psnr in (("latents", 11.0), ("latents@0123abcd", 22.0)):
        (out / folder / "ann").mkdir(parents=True)
        to_pil(torch.zeros(1, 3, 8, 8))[0].save(out / folder / "ann" / "0.png")
        (out / folder / "ann" / "0.json").write_text(json.dumps({
            "format": "facelib.projection", "config": {"steps": 5}, "metrics": [{"psnr": psnr}]}))
    build_report(out)
    md = (out / "report.md").read_text()
    assert "11.00 dB" in md and "22.00 dB" not in md  # nothing recorded: out/latents
    NotebookSetup(step="02_projection", out=out, smoke=True, device="cpu", seed=0, weights=None,
                  inventory=None).record(latents_dir=str(out / "latents@0123abcd"))
    build_report(out)
    md = (out / "report.md").read_text()
    assert "22.00 dB" in md and "11.00 dB" not in md and "out/latents@0123abcd/<person>/<n>.png" in md
    for folder in ("face_swap", "face_swap@89abcdef"):
        (out / folder).mkdir()
        to_pil(torch.zeros(1, 3, 8, 8))[0].save(out / folder / f"{folder[-4:]}_on_b.jpg")
    build_report(out)
    md = (out / "report.md").read_text()
    assert "swap_on_b" in md and "cdef_on_b" not in md  # nothing recorded: out/face_swap
    NotebookSetup(step="05_face_swap", out=out, smoke=True, device="cpu", seed=0, weights=None,
                  inventory=None).record(swap_dir=str(out / "face_swap@89abcdef"))
    build_report(out)
    md = (out / "report.md").read_text()
    assert "cdef_on_b" in md and "swap_on_b" not in md and "out/face_swap@89abcdef/<source>_on_<target>.jpg" in md


@pytest.mark.parametrize("key", ["latents_dir"])
def test_recorded_folder_ignores_a_broken_provenance(tmp_path, key):
    (tmp_path / "provenance.json").write_text("{not json")
    assert recorded_folder(tmp_path, "02_projection", key, tmp_path / "latents") == tmp_path / "latents"
    (tmp_path / "provenance.json").write_text(json.dumps({"02_projection": ["not", "a", "mapping"]}))
    assert recorded_folder(tmp_path, "02_projection", key, tmp_path / "latents") == tmp_path / "latents"


def test_alignment_folder_keeps_crops_of_other_settings(tmp_path):
    from PIL import Image

    from facelib.align_batch import alignment_folder, alignment_path
    from facelib.edit_inputs import aligned_dir
    from facelib.session import NotebookSetup

    out = tmp_path / "out"
    usual = out / "aligned"
    (usual / "ann").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(usual / "ann" / "0.jpg")
    alignment_path(usual / "ann" / "0.jpg").write_text(json.dumps(
        {"format": "facelib.alignment", "output_size": 64, "detector": "hog"}))
    Image.new("RGB", (64, 64)).save(usual / "ann" / "1.jpg")  # an older crop without geometry: its size says
    names = ["ann/0.jpg", "ann/1.jpg", "bob/0.jpg"]
    assert alignment_folder(usual, names, output_size=64, detector="hog").folder == usual
    other = alignment_folder(usual, names, output_size=32, detector="hog")
    assert other.beside and other.folder.name.startswith("aligned@") and len(other.others) == 2
    assert "output_size 64 (now 32)" in other.note
    assert alignment_folder(usual, names, output_size=32, detector="hog").folder == other.folder
    cnn = alignment_folder(usual, names[:1], output_size=64, detector="cnn")
    assert cnn.beside and "detector 'hog' (now 'cnn')" in cnn.note and cnn.folder != other.folder
    assert alignment_folder(usual, names, output_size=32, overwrite=True).folder == usual

    inv = type("Inventory", (), {"image_folders": ()})()
    assert aligned_dir("", out_dir=out, inventory=inv) == usual
    (other.folder / "ann").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(other.folder / "ann" / "0.jpg")
    NotebookSetup(step="01_alignment", out=out, smoke=False, device="cpu", seed=0, weights=None,
                  inventory=None).record(aligned_dir=str(other.folder))
    assert aligned_dir("", out_dir=out, inventory=inv) == other.folder  # notebook 01's last run
    assert aligned_dir(tmp_path / "mine", out_dir=out, inventory=inv) == tmp_path / "mine"


@pytest.mark.slow
def test_notebook_reruns_with_other_settings_write_beside(tmp_path):
    """01 and 02 run headless twice with other settings: the first results stay, the later
    notebooks (and 02 itself) use the newest ones."""
    pytest.importorskip("papermill")
    from facelib.pipeline import run_series
    from facelib.session import NotebookSetup

    out = tmp_path / "out"
    opts = dict(smoke=True, device="cpu", progress=False, report=False, echo=None, cell_timeout=600)
    photos = {"INPUT_DIR": str(out / "no-photos-here")}  # scikit-image's sample photos

    def run(only: str, steps: int = 2, **params):
        res = run_series(out, only=[only], steps=steps, parameters={**photos, **params}, **opts)
        step = next(s for s in res.steps if s.name.startswith(only))
        assert step.status.startswith("ok"), step.error
        return step.output.read_text()

    def recorded(step: str, key: str) -> Path:
        return Path(json.loads((out / "provenance.json").read_text())[step][key])

    run("01", OUTPUT_SIZE=128)
    assert recorded("01_alignment", "aligned_dir") == out / "aligned"
    run("02", steps=2)
    assert recorded("02_projection", "latents_dir") == out / "latents"
    before = _hashes(out / "latents")
    assert any(k.endswith(".pt") for k in before)

    text = run("02", steps=3)  # other settings: beside, the 2-step results stay byte-identical
    sibling = recorded("02_projection", "latents_dir")
    assert sibling.parent == out and sibling.name.startswith("latents@") and _hashes(out / "latents") == before
    assert f"this run's projections: {sibling}" in text and "result(s) made with other settings" in text
    assert sorted(k for k in _hashes(sibling) if k.endswith(".pt")) == sorted(k for k in before if k.endswith(".pt"))
    S = NotebookSetup(step="03_style_transfer", out=out, smoke=True, device="cpu", seed=0, weights=None,
                      inventory=None)
    assert S.latents_dir() == sibling
    run("02", steps=2)  # the first settings again: out/latents, nothing redone
    assert recorded("02_projection", "latents_dir") == out / "latents" and _hashes(out / "latents") == before

    crops = _hashes(out / "aligned")
    run("01", OUTPUT_SIZE=96)  # other crops beside the 128 px ones; 02 then projects them beside
    aligned = recorded("01_alignment", "aligned_dir")
    assert aligned.name.startswith("aligned@") and _hashes(out / "aligned") == crops
    run("02", steps=2)
    assert recorded("02_projection", "aligned_dir") == aligned
    newest = recorded("02_projection", "latents_dir")
    assert newest not in (out / "latents", sibling) and _hashes(out / "latents") == before
