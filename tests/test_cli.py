"""The command line, through ``facelib.cli.main`` only: each sub-command's ``--help`` and its happy
path on tiny inputs (a 32 px generator, one image, a couple of optimisation steps), with the exact
lines it prints, the files it writes and its exit code.

Deeper checks of what each command computes live with the library function it wraps
(``test_edits``, ``test_swap``, ``test_nvidia``, ...); here the contract of the shell is tested.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facelib
from facelib.cli import main

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("single_thread")

COMMANDS = ["demo", "report", "data", "sample", "align", "project", "convert", "mix", "express", "swap"]
DATA_ACTIONS = ["status", "download", "verify"]


# ---------------------------------------------------------------------------- help

def test_top_level_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m facelib [-h] [-v] [--debug] COMMAND ...")
    listed = [line.split()[0] for line in out.split("COMMAND\n", 2)[-1].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert [c for c in listed if c in COMMANDS] == COMMANDS  # in help order
    for command in set(listed) - set(COMMANDS):  # a newer command: at least its help works
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m facelib {command} [-h]")


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: python -m facelib")


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS] + [["data", a] for a in DATA_ACTIONS],
                         ids=COMMANDS + [f"data-{a}" for a in DATA_ACTIONS])
def test_every_command_has_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: python -m facelib {' '.join(argv)} [-h]")
    assert "options:" in captured.out and captured.err == ""


def test_help_runs_without_torch_and_through_python_m() -> None:
    """``--help`` is instant: no heavy module is imported; ``python -m facelib`` is the same entry point."""
    code = ("import sys\nfrom facelib.cli import main\n"
            "try:\n    main(['swap', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'dlib', 'papermill', 'lpips') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("HEAVY []")
    r = subprocess.run([sys.executable, "-m", "facelib", "mix", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m facelib mix [-h]")


def test_bad_option_value_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    assert main(["sample", str(tmp_path / "s.png"), "--n", "0"]) == 1
    err = capsys.readouterr().err
    assert err == "error: --n: expected 1 .. 256 samples, got 0\n"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def weights(tmp_path: Path, small_generator) -> Path:
    """The 32 px test generator (8 W+ rows) saved as a rosinality checkpoint."""
    path = tmp_path / "G.pt"
    facelib.save_generator(small_generator, path)
    return path


def _latents(G, n: int, seed: int) -> torch.Tensor:
    """(n, n_latent, style_dim) W+ codes of n random z (each row the same w)."""
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z)[:, None].repeat(1, G.n_latent, 1)


def _rendered(G, wplus: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(facelib.to_pil(G.synthesis(wplus, noise=None)[0]), dtype=np.int16)


# ---------------------------------------------------------------------------- commands

def test_sample_smoke_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.png"
    assert main(["sample", str(out), "--n", "1"]) == 0
    assert capsys.readouterr().out == f"wrote {out} (1 samples, 64 px)\n"
    # one 128 px cell (2 x the 64 px smoke generator) + 4 px padding each side, under the red smoke stamp
    px = np.asarray(Image.open(out).convert("RGB"))
    band = _red_band_height(px)
    assert px.shape == (band + 136, 136, 3) and band >= 24
    assert (px[band:band + 4] == 255).all() and (px[-4:] == 255).all()  # the grid's white border


def _red_band_height(px: np.ndarray) -> int:
    """Rows of the red stamp above an image (its first column is pure red there)."""
    red = (px[:, 0] == (200, 0, 0)).all(axis=1)
    return int(np.argmin(red)) if not red.all() else len(red)


def test_mix_and_express(tmp_path: Path, weights: Path, capsys) -> None:
    G = facelib.load_generator(weights)
    lat = _latents(G, 4, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "content.pt")
    torch.save({"wplus": lat[1:2]}, tmp_path / "style.pt")
    out = tmp_path / "mix.png"
    # every row, half way: row numbering schemes (18-row terms or the generator's own) agree on "all"
    assert main(["mix", str(tmp_path / "content.pt"), str(tmp_path / "style.pt"), str(out), "--rows", "all",
                 "--strength", "0.5", "--weights", str(weights), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == f"wrote {out} and {tmp_path / 'mix.pt'} (1 image(s), generator {weights})\n"
    mixed = facelib.mix_styles(lat[0], lat[1], rows="all", strength=0.5)
    torch.testing.assert_close(mixed, (lat[0] + lat[1]) / 2)
    assert torch.equal(facelib.load_latents(tmp_path / "mix.pt").wplus[0], mixed)
    assert Image.open(out).size == (32, 32)
    assert np.abs(np.asarray(Image.open(out), dtype=np.int16) - _rendered(G, mixed[None])).max() <= 1
    meta = json.loads((tmp_path / "mix.edit.json").read_text())
    assert (meta["edit"], meta["strength"]) == ("mix", 0.5)

    torch.save({"wplus": lat[2:3]}, tmp_path / "neutral.pt")
    torch.save({"wplus": lat[3:4]}, tmp_path / "happy.pt")
    out2 = tmp_path / "happy.png"
    assert main(["express", str(tmp_path / "mix.pt"), str(tmp_path / "neutral.pt"), str(tmp_path / "happy.pt"),
                 str(out2), "--mask", "all", "--strength", "0.5"]) == 0
    # the generator is found from the path recorded in mix.pt
    assert capsys.readouterr().out == (f"wrote {out2} and {tmp_path / 'happy.pt'} (1 image(s), "
                                       f"generator {weights} (recorded in mix.pt))\n")
    edited = facelib.apply_delta(mixed, lat[3] - lat[2], mask="all", strength=0.5)
    torch.testing.assert_close(edited, mixed + (lat[3] - lat[2]) / 2)
    assert torch.allclose(facelib.load_latents(tmp_path / "happy.pt").wplus[0], edited, atol=1e-6)
    assert Image.open(out2).size == (32, 32)


def test_convert_a_checkpoint(tmp_path: Path, weights: Path, capsys) -> None:
    out = tmp_path / "conv" / "G2.pt"
    assert main(["convert", str(weights), str(out), "--check-images", "1"]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out} (torch -> rosinality .pt, 32 px, n_latent 8)\n"
        "verified on 1 images from fixed W+ (noise=None): max abs diff 0.000e+00 (mapping 0.000e+00)\n")
    a, b = torch.load(weights, weights_only=True), torch.load(out, weights_only=True)
    assert set(b) == {"g_ema"}  # a generator without a recorded mean w (untrained) gets no latent_avg
    assert all(torch.equal(a["g_ema"][k], v) for k, v in b["g_ema"].items())


def test_project_a_folder_then_skip_it(tmp_path: Path, weights: Path, capsys) -> None:
    G = facelib.load_generator(weights)
    src = tmp_path / "aligned" / "ann"
    src.mkdir(parents=True)
    with torch.no_grad():
        facelib.to_pil(G.synthesis(_latents(G, 1, seed=3))[0].clamp(-1, 1)).save(src / "0.png")
    dst = tmp_path / "latents"
    argv = ["project", str(tmp_path / "aligned"), str(dst), "--weights", str(weights), "--steps", "2",
            "--lpips", "none", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "projected 1, skipped 0 already done, failed 0"
    assert re.fullmatch(r"  note: batch size 1 chosen from [\d.]+ [GM]B free on cpu \(about [\d.]+ MB\)", out[1])
    assert sorted(p.name for p in (dst / "ann").iterdir()) == ["0.json", "0.png", "0.pt"]
    p = facelib.load_projection(dst / "ann" / "0.pt")
    assert p.wplus.shape == (1, 8, 64) and len(p.history[0]["loss"]) == 2
    before = (dst / "ann" / "0.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert capsys.readouterr().out == "projected 0, skipped 1 already done, failed 0\n"
    assert (dst / "ann" / "0.pt").stat().st_mtime_ns == before


def test_swap_with_the_random_identity_network(tmp_path: Path, weights: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/ here: no ArcFace file is found
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path / "empty"))
    G = facelib.load_generator(weights)
    lat = _latents(G, 2, seed=4)
    with torch.no_grad():
        target_img, source_img = G.synthesis(lat).clamp(-1, 1)
    facelib.project(G, target_img[None], steps=1, lpips=None, progress=False).save(tmp_path / "target.pt")
    facelib.to_pil(source_img).save(tmp_path / "source.png")
    out = tmp_path / "swap.png"
    assert main(["swap", "source.png", "target.pt", str(out), "--weights", str(weights), "--steps", "2",
                 "--mask", "ellipse", "--lpips", "none", "--no-judge", "--device", "cpu", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    result = facelib.load_swap(tmp_path / "swap.pt")
    assert lines[:2] == [f"wrote {out}, {tmp_path / 'swap.pt'} and {tmp_path / 'swap.json'} (generator {weights}; "
                         "RANDOM identity network (untrained): identity figures are a smoke test only; rows default)",
                         result.caption(0)]
    assert lines[1].startswith("id src ") and all(line.startswith("warning: ") for line in lines[2:])
    assert result.steps_done == 2 and result.source_names == ["source.png"] and result.target_names == ["target.pt"]
    # the 32 px result under the red "random identity network" stamp
    px = np.asarray(Image.open(out).convert("RGB"))
    band = _red_band_height(px)
    assert px.shape == (band + 32, 32, 3) and band >= 24
    assert np.abs(px[band:].astype(int) - np.asarray(result.to_pil()[0], dtype=int)).max() <= 1


def test_align_a_photo(tmp_path: Path, capsys) -> None:
    pytest.importorskip("dlib")
    skdata = pytest.importorskip("skimage.data")
    try:
        facelib.dlib_model_path("shape_predictor_68_face_landmarks.dat")
    except facelib.FacelibError:
        pytest.skip("the dlib 68-point predictor is not installed (face_recognition_models)")
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(skdata.astronaut()).save(src / "astronaut.png")
    dst = tmp_path / "aligned"
    assert main(["align", str(src), str(dst), "--size", "64"]) == 0
    assert capsys.readouterr().out == "written 1 file(s), skipped 0, failed 0\n"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == [
        "astronaut/0.align.json", "astronaut/0.jpg"]
    assert Image.open(dst / "astronaut" / "0.jpg").size == (64, 64)
    assert main(["align", str(src), str(dst), "--size", "64"]) == 0
    assert capsys.readouterr().out.startswith("written 0 file(s), skipped 1, failed 0\n")


def test_report_on_an_empty_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["report", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"report (provenance unknown): {out / 'report.md'} and {out / 'report.html'}"
    assert [line.split()[0] for line in lines[1:]] == [
        "01_alignment", "02_projection", "03_style_transfer", "04_expressions", "05_face_swap", "06_directions"]
    assert all("0 grid(s), 0 image(s)" in line for line in lines[1:])
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


def test_data_status_json_finds_a_generator_by_content(tmp_path: Path, weights: Path, capsys,
                                                       monkeypatch) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "no-name-hint.bin").write_bytes(weights.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACELIB_DATA", str(folder))
    assert main(["data", "status", "--json"]) == 0
    inv = json.loads(capsys.readouterr().out)
    gens = [g["path"] for g in inv["generators"]]
    assert gens == [str(folder / "no-name-hint.bin")]
    assert main(["data"]) == 0  # the bare group is `data status`
    text = capsys.readouterr().out
    assert str(folder / "no-name-hint.bin") in text and "no StyleGAN2 generator" not in text


def _manifest(dest: Path, handle: str, files: dict[str, bytes]) -> None:
    recs = []
    for rel, data in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
        recs.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "header": "other"})
    manifest = {"format": "facelib.data-manifest", "version": 1,
                "datasets": {handle: {"client": "kagglehub", "folder": handle.split("/")[1], "files": recs}}}
    (dest / "MANIFEST.json").write_text(json.dumps(manifest))


def test_data_verify_and_download_of_a_present_copy(tmp_path: Path, capsys, monkeypatch) -> None:
    dest = tmp_path / "data"
    _manifest(dest, "someone/tiny-set", {"tiny-set/a.bin": b"abc", "tiny-set/sub/b.bin": b"12345"})
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))  # no credentials are needed
    assert main(["data", "verify", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out == "all files match the manifest\n"
    assert main(["data", "download", "--dest", str(dest), "--dataset", "someone/tiny-set"]) == 0
    assert capsys.readouterr().out == (f"someone/tiny-set: already in {dest / 'tiny-set'} "
                                       f"(sizes match {dest / 'MANIFEST.json'})\n")
    # same size, other bytes: only the hash check sees it
    (dest / "tiny-set" / "a.bin").write_bytes(b"abd")
    assert main(["data", "verify", "--dest", str(dest), "--quick"]) == 0
    capsys.readouterr()
    assert main(["data", "verify", "--dest", str(dest)]) == 1
    assert capsys.readouterr().out == (f"{dest / 'tiny-set' / 'a.bin'}: SHA-256 differs from the one recorded "
                                       "at download\n1 problem(s)\n")


def test_demo_smoke_run_with_papermill_mocked(tmp_path: Path, capsys, monkeypatch) -> None:
    """`demo` runs each notebook once, in order, prints one line each and exits 0; 1 when one fails."""
    papermill = pytest.importorskip("papermill")
    ran: list[str] = []

    def fake_execute(src, dst, parameters, **kwargs):
        ran.append(Path(src).stem)
        if Path(src).stem not in ("01_alignment", "06_directions"):  # these declare no SMOKE/STEPS parameters
            assert parameters["SMOKE"] is True and parameters["STEPS"] == 3
        if Path(src).stem == "04_expressions" and fail:
            raise RuntimeError("kernel died")
        Path(dst).write_text(Path(src).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    fail = False
    assert main(["demo", "--out", str(out), "--smoke", "--steps", "3", "--kernel", "python3",
                 "--no-progress"]) == 0
    names = ["01_alignment", "02_projection", "03_style_transfer", "04_expressions", "05_face_swap", "06_directions"]
    assert ran == names
    lines = capsys.readouterr().out.splitlines()
    status = [line for line in lines if line.startswith("[")]
    assert [line.split(":")[0] for line in status] == [f"[{k}/6] {n}" for k, n in enumerate(names, 1)]
    assert all(f": ok in " in line and line.endswith(f"-> {out / 'notebooks' / n}.ipynb")
               for line, n in zip(status, names))
    assert lines[0].startswith("SMOKE RUN (smoke run requested)")
    assert (out / "run.json").is_file() and (out / "report.html").is_file()

    ran.clear()
    fail = True
    assert main(["demo", "--out", str(out), "--smoke", "--steps", "3", "--kernel", "python3",
                 "--no-progress"]) == 1
    assert ran == names  # the later notebook still ran
    printed = capsys.readouterr().out
    assert "[4/6] 04_expressions: FAILED in " in printed and "- RuntimeError: kernel died" in printed
