"""Hostile inputs, reruns and interrupts: finished results are never replaced unasked, an
item's outputs are complete together, every bad input is one clean error line, stand-ins are
never reported as results. Every hostile file is built here in a temporary folder."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import facelib
from facelib import edit_inputs, latents
from facelib.cli import main
from facelib.errors import BatchInterrupted, CheckpointError, InputError, RangeError
from facelib.grids import to_pil
from facelib.projection import load_projection
from facelib.projection_folder import project_folder
from facelib.weights import save_generator

FAST = dict(steps=2, lpips=None, mse_weight=1.0, progress=False)


@pytest.fixture(autouse=True)
def _no_found_data(monkeypatch, tmp_path):
    """No weight files are found unless a test puts them in $FACELIB_DATA; no notice marker is shared."""
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _photos(G, folder: Path, n: int = 2, person: str = "ann") -> list[Path]:
    with torch.no_grad():
        x = G.sample(n, seed=3)
    (folder / person).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(to_pil(x)):
        paths.append(folder / person / f"{i}.png")
        im.save(paths[-1])
    return paths


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights(G, tmp_path: Path) -> Path:
    path = tmp_path / "G.pt"
    save_generator(G, path)
    return path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------------------
# 1. Finished results are never replaced silently
# ----------------------------------------------------------------------------------------

def test_project_keeps_results_of_other_settings_and_generator(small_generator, tmp_path):
    src, dst = tmp_path / "aligned", tmp_path / "latents"
    _photos(small_generator, src)
    first = project_folder(src, dst, small_generator, **FAST)
    assert len(first.written) == 2 and first.ok
    before = _snapshot(dst)
    other = project_folder(src, dst, small_generator, **{**FAST, "steps": 3})
    assert other.written == [] and len(other.kept) == 2 and other.nothing_done and not other.ok
    assert "steps 2 (now 3)" in next(iter(other.kept.values()))
    assert "kept 2 result(s) made with other settings; rerun with --overwrite" in other.summary()
    from tests.conftest import make_small_generator
    G2 = make_small_generator(seed=7)
    assert len(project_folder(src, dst, G2, **FAST).kept) == 2  # another generator
    assert _snapshot(dst) == before  # byte-identical
    replaced = project_folder(src, dst, small_generator, overwrite=True, **{**FAST, "steps": 3})
    assert len(replaced.written) == 2 and load_projection(dst / "ann" / "0.pt").config.steps == 3


def test_mix_keeps_out_of_other_settings(small_generator, tmp_path, capsys):
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 2, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    torch.save({"wplus": lat[1:]}, tmp_path / "b.pt")
    out = tmp_path / "mix.png"
    argv = ["mix", "a.pt", "b.pt", str(out), "--rows", "2-5", "--weights", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 0 and "already done" in capsys.readouterr().out
    assert main(argv[:-2] + ["--strength", "0.5"] + argv[-2:]) == 1
    assert "rerun with --overwrite" in capsys.readouterr().out
    assert _snapshot(tmp_path) == before
    assert main(argv + ["--strength", "0.5", "--overwrite"]) == 0
    assert json.loads((tmp_path / "mix.edit.json").read_text())["strength"] == 0.5


def test_align_keeps_outputs_of_another_size(tmp_path, capsys):
    src, dst = tmp_path / "photos", tmp_path / "aligned"
    (src / "bob").mkdir(parents=True)
    Image.new("RGB", (40, 40), (120, 100, 90)).save(src / "bob" / "a.jpg")
    (dst / "bob").mkdir(parents=True)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(dst / "bob" / "0.jpg")  # made earlier at 32 px
    before = _snapshot(dst)
    res = facelib.align_folder(src, dst, output_size=64, progress=False)  # no detection needed: kept first
    assert res.written == () and res.nothing_done and not res.ok
    assert "32 px; this run: 64 px" in res.kept[0][1]
    assert main(["align", str(src), str(dst), "--size", "64", "--quiet"]) == 1
    assert "rerun with --overwrite" in capsys.readouterr().out
    assert _snapshot(dst) == before


# ----------------------------------------------------------------------------------------
# 2. An item's outputs are one unit; stale temporary files; Ctrl-C summary
# ----------------------------------------------------------------------------------------

def test_kill_between_writes_then_rerun_completes_every_item(small_generator, tmp_path, monkeypatch):
    from facelib import projection as P

    src, dst = tmp_path / "aligned", tmp_path / "latents"
    _photos(small_generator, src)
    real_save = P.Projection.save

    def killed(self, path, **kw):  # the rendering is written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(P.Projection, "save", killed)
    with pytest.raises(BatchInterrupted) as info:
        project_folder(src, dst, small_generator, batch_size=1, **FAST)
    assert info.value.result.interrupted and [p.name for p in info.value.result.not_reached] == ["0.png", "1.png"]
    assert not (dst / "ann" / "0.json").exists()  # no sidecar: the set is not complete
    (dst / "ann" / ".0.999999999-abc.part.pt").write_bytes(b"half")  # a killed writer's leftover
    (dst / "ann" / ".1.x_y.part.json").write_bytes(b"half")  # an older temporary name
    monkeypatch.setattr(P.Projection, "save", real_save)
    res = project_folder(src, dst, small_generator, batch_size=1, **FAST)
    assert len(res.written) == 2
    for i in range(2):
        assert {p.suffix for p in (dst / "ann").glob(f"{i}.*")} == {".png", ".pt", ".json"}
        assert load_projection(dst / "ann" / f"{i}.pt").steps_done == 2
    assert not [p for p in dst.rglob("*") if ".part" in p.name]
    # a complete .pt + .json whose rendering went missing: remade from the saved tensors, no optimisation
    (dst / "ann" / "1.png").unlink()
    monkeypatch.setattr(P, "project", lambda *a, **k: pytest.fail("must not optimise again"))
    again = project_folder(src, dst, small_generator, batch_size=1, **FAST)
    assert (dst / "ann" / "1.png").is_file() and len(again.skipped) == 1 and len(again.written) == 1


def test_ctrl_c_prints_finished_skipped_and_not_reached(small_generator, tmp_path, monkeypatch, capsys):
    from facelib import projection_folder as P

    weights = _weights(small_generator, tmp_path)
    src = tmp_path / "aligned"
    _photos(small_generator, src, n=3)
    real = P.project
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(P, "project", interrupt_second)
    rc = main(["project", str(src), "out", "--weights", str(weights), "--steps", "2", "--lpips", "none",
               "--batch-size", "1", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 130 and "INTERRUPTED: projected 1" in err and "not reached 2" in err
    assert "not reached: " + str(src / "ann" / "2.png") in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------
# 3. Bad inputs: one clean line, non-zero exit
# ----------------------------------------------------------------------------------------

def test_input_folder_oddities_are_listed_and_the_batch_goes_on(small_generator, tmp_path, capsys):
    weights = _weights(small_generator, tmp_path)
    src = tmp_path / "aligned"
    _photos(small_generator, src, n=1)
    (src / "ann" / "loop").symlink_to(src)  # symlink loop
    (src / "gone.png").symlink_to(src / "missing.png")  # dangling link
    (src / "folder.jpg").mkdir()  # a folder named like an image
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable image
    rc = main(["project", str(src), "out", "--weights", str(weights), "--steps", "1", "--lpips", "none",
               "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 1 and "projected 1" in out and (tmp_path / "out" / "ann" / "0.json").is_file()
    for name, why in (("loop", "symlink loop"), ("gone.png", "dangling link"),
                      ("folder.jpg", "folder named like an image"), ("broken.png", "cannot read image")):
        assert any(name in ln and why in ln for ln in out.splitlines()), (name, out)


def test_sizes_are_bounded_and_memory_is_estimated_before_allocating(small_generator, tmp_path, capsys,
                                                                     monkeypatch):
    from facelib import memory

    (tmp_path / "p").mkdir()
    assert main(["align", "p", "a", "--size", "5000"]) == 1
    assert "--size: expected 16 .. 4096 px, got 5000" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(InputError, match="output_size: expected 16 .. 4096 px"):
        facelib.align_folder("p", "a", output_size=8)
    with pytest.raises(RangeError, match=r"needs about .* for one image but cpu has 1\.0 MB free"):
        memory.plan_batch(small_generator, "cpu", free=2 ** 20)
    plan = memory.plan_batch(small_generator, "cpu", free=memory.projection_bytes(small_generator, 2) * 2)
    assert plan.batch == 4 or "chosen from" in plan.note
    big = memory.projection_bytes(small_generator, 4)
    fits_two = int(memory.projection_bytes(small_generator, 2) / memory.HEADROOM) + 1
    small = memory.plan_batch(small_generator, "cpu", requested=4, free=fits_two)
    assert small.batch == 2 and "batch size 4 would need" in small.note and big > small.estimate
    # the refusal comes before any optimisation
    weights = _weights(small_generator, tmp_path)
    _photos(small_generator, tmp_path / "aligned", n=1)
    monkeypatch.setattr(memory, "free_bytes", lambda device="cpu": 2 ** 20)
    monkeypatch.setattr("facelib.projection_folder.project", lambda *a, **k: pytest.fail("allocated before the check"))
    assert main(["project", "aligned", "out", "--weights", str(weights), "--steps", "1", "--lpips", "none",
                 "--quiet", "--device", "cpu"]) == 1
    assert "for one image but cpu has 1.0 MB free" in _one_error_line(capsys.readouterr().err)


def test_out_of_memory_falls_back_to_smaller_batches(small_generator, tmp_path, monkeypatch):
    from facelib import projection_folder as P

    src = tmp_path / "aligned"
    _photos(small_generator, src, n=3)
    real = P.project

    def oom_above_one(G, targets, **k):
        if targets.shape[0] > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(G, targets, **k)

    monkeypatch.setattr(P, "project", oom_above_one)
    res = project_folder(src, tmp_path / "out", small_generator, batch_size=3, **FAST)
    assert len(res.written) == 3 and res.ok
    assert any("out of memory with 3 images together; going on with 1" in n for n in res.notes)


def test_non_finite_weights_and_latents_are_refused_with_the_tensor_name(small_generator, tmp_path):
    from facelib.weights import generator_checkpoint, load_generator

    ckpt = generator_checkpoint(small_generator)
    key = next(k for k in ckpt["g_ema"] if k.endswith("conv.weight"))
    ckpt["g_ema"][key] = ckpt["g_ema"][key].clone()
    ckpt["g_ema"][key].view(-1)[0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=rf"nan\.pt: generator tensor '{key}' holds NaN"):
        load_generator(tmp_path / "nan.pt")
    from facelib.identity import build_arcface, load_arcface

    sd = build_arcface(arch="iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=0).state_dict()
    bad = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[bad] = sd[bad].clone().fill_(float("inf"))
    with pytest.raises(CheckpointError, match=f"identity network tensor '{bad}' holds inf"):
        load_arcface(sd)
    w = edit_inputs.random_latents(small_generator, 1, seed=0)
    w[0, 0, 0] = float("nan")
    torch.save({"wplus": w}, tmp_path / "lat.pt")
    with pytest.raises(CheckpointError, match=r"lat\.pt: W\+ contains NaN"):
        latents.load_latents(tmp_path / "lat.pt")


def test_convert_verification_fails_on_nan(small_generator, tmp_path, monkeypatch):
    from facelib import nvidia_convert

    save_generator(small_generator, tmp_path / "G.pt")
    from facelib.stylegan2 import StyleGAN2Generator

    orig = StyleGAN2Generator.synthesis
    calls = []

    def nan_after_reload(self, *a, **k):  # the converted network renders NaN
        calls.append(1)
        img = orig(self, *a, **k)
        return img * float("nan") if len(calls) > 1 else img

    monkeypatch.setattr(StyleGAN2Generator, "synthesis", nan_after_reload)
    with pytest.raises(CheckpointError, match="does not reproduce") as info:
        nvidia_convert.convert_checkpoint(tmp_path / "G.pt", tmp_path / "out.pt", n_check=1)
    assert "images nan" in str(info.value) and not (tmp_path / "out.pt").exists()


def test_output_paths_are_checked_before_any_work(small_generator, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    cases = [("x.gif", "unknown extension '.gif'"), ("noext", "no file extension"),
             ("afile/x.png", "afile is a file")]
    for out, why in cases:
        assert main(["sample", out]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert out in line and why in line
    (tmp_path / "ro").mkdir()
    from facelib import _io

    real_access = os.access
    monkeypatch.setattr(_io.os, "access", lambda p, m: False if Path(p).name == "ro" else real_access(p, m))
    assert main(["sample", "ro/x.png"]) == 1
    assert "ro is not writable" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.rglob("x.*"))


def test_bad_options_are_one_line_errors(small_generator, tmp_path, capsys):
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 2, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    cases = [
        (["sample", "s.png", "--device", "gpu0"], []),  # sample has no --device: argparse
        (["project", "p", "o", "--device", "banana"], ["--device 'banana': not a device"]),
        (["project", "p", "o", "--steps", "0"], ["--steps: expected an integer >= 1, got 0"]),
        (["sample", "s.png", "--truncation", "nan"], ["--truncation: expected a finite number"]),
        (["mix", "a.pt", "a.pt", "m.png", "--rows", "", "--weights", str(weights)], ["--rows '': selects no W+ row"]),
        (["mix", "a.pt", "a.pt", "m.png", "--rows", "eyes", "--weights", str(weights)],
         ["--rows 'eyes': ", "cannot read 'eyes'"]),
        (["express", "a.pt", "a.pt", "a.pt", "e.png", "--mask", "none", "--weights", str(weights)],
         ["--mask 'none': selects no W+ row"]),
    ]
    if not torch.cuda.is_available():
        cases.append((["project", "p", "o", "--device", "cuda"], ["cuda requested but no CUDA device is visible"]))
    (tmp_path / "p").mkdir()
    for argv, expected in cases[1:]:
        assert main(argv) == 1, argv
        line = _one_error_line(capsys.readouterr().err)
        for text in expected:
            assert text in line, (argv, line)
    assert not list(tmp_path.glob("*.png"))


def test_latent_shapes_are_checked_naming_the_file(small_generator, tmp_path, capsys):
    weights = _weights(small_generator, tmp_path)
    n, d = small_generator.n_latent, small_generator.style_dim
    torch.save({"wplus": torch.zeros(0, n, d)}, tmp_path / "empty.pt")
    torch.save({"wplus": torch.zeros(1, n - 1, d)}, tmp_path / "rows.pt")
    torch.save({"wplus": torch.zeros(1, n, d + 1)}, tmp_path / "width.pt")
    noises = {f"noise_{k}": torch.zeros(1, 1, b.shape[-1], b.shape[-1])
              for k, b in enumerate(small_generator.noise_buffers)}
    noises["noise_1"] = torch.zeros(1, 1, 3, 3)
    torch.save({"wplus": torch.zeros(1, n, d), **noises}, tmp_path / "noise.pt")
    torch.save({"wplus": torch.zeros(1, n, d), "noise_0": torch.zeros(5)}, tmp_path / "noise1d.pt")
    for name, text in (("empty.pt", "empty batch"), ("rows.pt", "does not fit the generator"),
                       ("width.pt", "does not fit the generator"), ("noise.pt", "noise maps of sides"),
                       ("noise1d.pt", "noise map 'noise_0' has shape (5,)")):
        assert main(["mix", name, name, "x.png", "--weights", str(weights)]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert name in line and text in line, line


def test_truncated_checkpoint_says_so(small_generator, tmp_path):
    from facelib.weights import load_generator

    path = _weights(small_generator, tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or incomplete download") as info:
        load_generator(tmp_path / "cut.pt")
    assert "BadZipFile" not in str(info.value)


def test_debug_flag_anywhere_and_unexpected_errors_are_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "p").mkdir()
    assert main(["project", "p", "o", "--device", "banana", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --device")
    import facelib.cli_data as C

    def boom(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C, "_run_report", boom)
    assert main(["report"]) == 1
    assert "No space left on device (run with --debug" in _one_error_line(capsys.readouterr().err)


def test_verbose_after_the_sub_command_and_pil_quiet(tmp_path):
    root = logging.getLogger()
    saved = root.level
    try:
        for argv in (["sample", "a.png", "--n", "1", "-v"], ["-v", "sample", "b.png", "--n", "1"]):
            root.setLevel(logging.WARNING)
            assert main(argv) == 0
            assert root.level == logging.DEBUG, argv
            assert logging.getLogger("PIL").getEffectiveLevel() >= logging.WARNING
        root.setLevel(logging.WARNING)
        assert main(["sample", "c.png", "--n", "1"]) == 0 and root.level == logging.WARNING
    finally:
        root.setLevel(saved)


def test_align_ctrl_c_lists_what_was_not_reached_and_stale_parts_go(tmp_path, monkeypatch):
    from facelib import align_batch as A

    src, dst = tmp_path / "photos", tmp_path / "aligned"
    (src / "bob").mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (40, 40), (k, 100, 90)).save(src / "bob" / f"{k}.jpg")
    (dst / "bob").mkdir(parents=True)
    (dst / "bob" / ".0.999999999-abc.part.jpg").write_bytes(b"half")
    faces = []

    def fake_align(path, **k):
        if len(faces) == 1:
            raise KeyboardInterrupt
        faces.append(path)
        return [type("F", (), {"image": Image.new("RGB", (64, 64))})()]

    monkeypatch.setattr(A, "align_faces", fake_align)
    monkeypatch.setattr(A, "save_alignment", lambda face, image, photo: Path(image).with_suffix(".align.json"))
    with pytest.raises(BatchInterrupted) as info:
        A.align_folder(src, dst, output_size=64, progress=False)
    r = info.value.result
    assert r.interrupted and [p.name for p in r.written] == ["0.jpg"]
    assert [p.name for p in r.not_reached] == ["1.jpg", "2.jpg"] and "not reached 2" in r.summary()
    assert sorted(p.name for p in (dst / "bob").iterdir()) == ["0.jpg"]  # the stale .part is gone


# ----------------------------------------------------------------------------------------
# Weights found like demo; untrained generator stamped from every entry point
# ----------------------------------------------------------------------------------------

def test_project_finds_weights_like_demo_and_stamps_the_smoke_generator(small_generator, tmp_path, monkeypatch,
                                                                        capsys):
    from facelib.weights import file_sha256

    data = tmp_path / "data"
    data.mkdir()
    save_generator(small_generator, data / "ffhq-small.pt")
    monkeypatch.setenv("FACELIB_DATA", str(data))
    _photos(small_generator, tmp_path / "aligned", n=1)
    assert main(["project", "aligned", "out", "--steps", "1", "--lpips", "none", "--quiet", "--device", "cpu"]) == 0
    meta = json.loads((tmp_path / "out" / "ann" / "0.json").read_text())
    assert meta["weights_sha256"] == file_sha256(data / "ffhq-small.pt")
    # the smoke generator's renderings carry the stamp whichever entry point writes them
    from facelib.session import smoke_generator

    G = smoke_generator(0)
    res = project_folder(tmp_path / "aligned", tmp_path / "smoke", G, **FAST)
    png = Image.open(tmp_path / "smoke" / "ann" / "0.png")
    plain = to_pil(load_projection(res.written[0]).images[0])
    assert png.tobytes() != plain.tobytes()  # the stamp is on the written rendering


# ----------------------------------------------------------------------------------------
# 4. Stand-ins are never reported as results
# ----------------------------------------------------------------------------------------

def test_stand_ins_error_in_a_real_run_and_are_stamped_when_allowed(tmp_path):
    from facelib.stamps import STAND_IN_STAMP
    from facelib.session import notebook_setup

    S = notebook_setup("04_expressions", out_dir=tmp_path / "out", smoke=True)
    S.use_inputs(True, run_first="02_projection")  # a smoke run goes on
    assert S.stamp is not None and "SMOKE" in S.stamp
    real = notebook_setup("04_expressions", out_dir=tmp_path / "real", smoke=False, need_generator=False)
    with pytest.raises(InputError, match="Run 02_projection first.*ALLOW_STAND_INS = True"):
        real.use_inputs(True, notes=["references: no photos for ['happy']; random latents stand in"])
    real.use_inputs(True, allow=True)
    assert real.stamp == STAND_IN_STAMP and STAND_IN_STAMP in real.title("x")
    real.record(images=1)
    prov = json.loads((tmp_path / "real" / "provenance.json").read_text())
    assert prov["04_expressions"]["stand_in_hint"] == "run 02_projection first"
    # the report does not call them projections
    ex = tmp_path / "real" / "expressions"
    ex.mkdir()
    for name in ("neutral", "happy", "transferred_happy"):
        Image.new("RGB", (16, 16)).save(ex / f"{name}.jpg")
    from facelib.report import build_report

    build_report(tmp_path / "real")
    md = (tmp_path / "real" / "report.md").read_text()
    assert "reference (stand-in (random latent))" in md and "reference (projection)" not in md
    assert "STAND-INS" in md
    real.use_inputs(False)
    assert real.stamp is None


@pytest.mark.slow
def test_runner_status_says_ok_with_stand_in_inputs(tmp_path):
    from facelib.pipeline import run_series
    from tests.test_notebooks import _tiny_notebook

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "03_style_transfer.ipynb",
                   "import facelib.session\n"
                   "S = facelib.session.notebook_setup('03_style_transfer', out_dir=OUT_DIR, smoke=SMOKE)\n"
                   "S.use_inputs(True, notes=['targets: no projections; using 1 random latent(s)'])\n"
                   "S.record(images=0)\n",
                   'OUT_DIR = "out"\nSMOKE = False\n')
    res = run_series(tmp_path / "out", notebooks_dir=nbs, smoke=True, steps=2, progress=False, echo=lambda s: None)
    step = next(s for s in res.steps if s.name == "03_style_transfer")
    assert step.status == "ok, with stand-in inputs: run 02_projection first" and res.ok
    assert "ok, with stand-in inputs: run 02_projection first" in res.summary()


def test_single_output_commands_keep_an_existing_file_unless_overwrite(small_generator, tmp_path, capsys):
    weights = _weights(small_generator, tmp_path)
    out = tmp_path / "s.png"
    out.write_bytes(b"a finished result")
    assert main(["sample", str(out), "--weights", str(weights), "--n", "1"]) == 1
    assert _one_error_line(capsys.readouterr().err) == f"error: OUT {out}: exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"a finished result"
    dst = tmp_path / "g.pt"
    dst.write_bytes(b"converted before")
    assert main(["convert", str(weights), str(dst)]) == 1
    assert "exists; pass --overwrite" in _one_error_line(capsys.readouterr().err)
    assert dst.read_bytes() == b"converted before"
    assert main(["sample", str(out), "--weights", str(weights), "--n", "1", "--overwrite"]) == 0
    assert out.read_bytes() != b"a finished result"


def test_grids_label_stand_in_references_as_such():
    from facelib.edit_inputs import EditInputs

    assert EditInputs(targets={}, references={}, stand_in_for=("targets",)).reference_label == "projection"
    assert EditInputs(targets={}, references={}, stand_in_for=("sad",)).reference_label == "stand-in (random latent)"
    assert EditInputs(targets={}, references={}).reference_label == "projection"


def test_edit_whose_image_was_lost_is_redone_and_kept_message_names_only_the_change(small_generator, tmp_path,
                                                                                      capsys):
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 2, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    torch.save({"wplus": lat[1:]}, tmp_path / "b.pt")
    out = tmp_path / "m.png"
    argv = ["mix", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), str(out), "--weights", str(weights)]
    assert main(argv) == 0
    out.unlink()  # the image is gone while its settings record stays: the same settings make it again
    capsys.readouterr()
    assert main(argv) == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(argv + ["--strength", "0.5"]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"kept {out}: made with other settings (strength 1.0 (now 0.5))")
    assert out.read_bytes() == before


def test_kill_between_an_edits_image_and_its_record_is_redone(small_generator, tmp_path, monkeypatch, capsys):
    """A single-output command killed after writing its image but before its settings record: the
    rerun recognises the unfinished output (its marker) and makes it again, whatever the settings;
    a marker left by a run that did finish does not make a finished result replaceable."""
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 2, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    torch.save({"wplus": lat[1:]}, tmp_path / "b.pt")
    out = tmp_path / "m.png"
    marker = tmp_path / "m.png.pending.json"
    argv = ["mix", "a.pt", "b.pt", str(out), "--weights", str(weights), "--device", "cpu"]
    real_save = latents.save_latents

    def killed(*a, **k):  # the process dies right after the image was written
        raise KeyboardInterrupt

    monkeypatch.setattr(latents, "save_latents", killed)
    assert main(argv + ["--strength", "0.5"]) == 130
    assert out.is_file() and marker.is_file() and not (tmp_path / "m.edit.json").exists()
    monkeypatch.setattr(latents, "save_latents", real_save)
    capsys.readouterr()
    # without the marker this image would be "a file without a record" and kept; with it, it is redone
    assert main(argv) == 0
    assert "interrupted while writing it; making it again" in capsys.readouterr().out
    assert not marker.exists() and json.loads((tmp_path / "m.edit.json").read_text())["strength"] == 1.0
    assert main(argv) == 0 and "already done" in capsys.readouterr().out
    # a marker whose run finished (killed after the record, before removing the marker)
    marker.write_text(json.dumps({"settings": json.loads((tmp_path / "m.edit.json").read_text())}))
    before = out.read_bytes()
    assert main(argv + ["--strength", "0.5"]) == 1
    assert "made with other settings" in capsys.readouterr().out
    assert out.read_bytes() == before and not marker.exists()


def test_direction_edit_keeps_an_output_of_other_settings(small_generator, tmp_path, capsys):
    """`edit` keeps an output of other settings like the other single-output commands."""
    from facelib import directions as dirs

    weights = _weights(small_generator, tmp_path)
    torch.save({"wplus": edit_inputs.random_latents(small_generator, 1, seed=1)}, tmp_path / "a.pt")
    dirs.pca_directions(small_generator, n=64, k=2, seed=0).save(tmp_path / "d.pt")
    out = tmp_path / "e.png"
    argv = ["edit", "a.pt", str(out), "--direction", "d.pt", "--weights", str(weights), "--device", "cpu"]
    assert main(argv + ["--strength", "1"]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(argv + ["--strength", "1"]) == 0 and "already done" in capsys.readouterr().out
    assert main(argv + ["--strength", "2"]) == 1
    assert "strength 1.0 (now 2.0)" in capsys.readouterr().out and out.read_bytes() == before
    assert main(argv + ["--strength", "2", "--overwrite"]) == 0 and out.read_bytes() != before


def test_an_edit_whose_input_file_changed_is_kept_not_called_done(small_generator, tmp_path, capsys):
    """The inputs' hashes are part of an edit's settings: after CONTENT is projected again, the
    finished output made from the old file is kept (not "already done", not replaced)."""
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 3, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    torch.save({"wplus": lat[1:2]}, tmp_path / "b.pt")
    out = tmp_path / "m.png"
    argv = ["mix", "a.pt", "b.pt", str(out), "--weights", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    before = out.read_bytes()
    torch.save({"wplus": lat[2:]}, tmp_path / "a.pt")  # the content file was made again
    capsys.readouterr()
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"kept {out}: made with other settings (inputs.a.pt") and out.read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0 and out.read_bytes() != before


def test_an_unreadable_marker_does_not_make_a_finished_edit_replaceable(small_generator, tmp_path, capsys):
    """Markers are written atomically, so one that cannot be read is not this command's: it says
    nothing, and the finished output of other settings beside it stays."""
    weights = _weights(small_generator, tmp_path)
    lat = edit_inputs.random_latents(small_generator, 2, seed=1)
    torch.save({"wplus": lat[:1]}, tmp_path / "a.pt")
    torch.save({"wplus": lat[1:]}, tmp_path / "b.pt")
    out = tmp_path / "m.png"
    argv = ["mix", "a.pt", "b.pt", str(out), "--weights", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    before = out.read_bytes()
    (tmp_path / "m.png.pending.json").write_text("{not json")
    capsys.readouterr()
    assert main(argv + ["--strength", "0.5"]) == 1
    assert "made with other settings" in capsys.readouterr().out and out.read_bytes() == before
