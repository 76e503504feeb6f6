"""facelib.distributed and the torchrun launch of the batch commands (CPU, gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from facelib import distributed as D
from facelib.errors import InputError
from facelib.grids import to_pil
from facelib.projection import load_projection
from facelib.projection_folder import project_folder

from .conftest import REPO, make_small_generator


def test_shard_is_an_exact_partition_in_every_world_size():
    items = [f"img{i:02d}" for i in range(11)]
    for world_size in (1, 2, 3, 4, 16):
        shares = [D.shard(items, D.DistInfo(rank=r, world_size=world_size)) for r in range(world_size)]
        flat = [x for s in shares for x in s]
        assert sorted(flat) == items and len(flat) == len(set(flat))  # each item exactly once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # round robin: balanced
        assert shares == [D.shard(items, D.DistInfo(rank=r, world_size=world_size)) for r in range(world_size)]


def test_world_reads_torchrun_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.world() == D.DistInfo(0, 1, 0) and not D.world().distributed
    assert D.gather("x") == ["x"] and D.shard([1, 2, 3]) == [1, 2, 3]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = D.world()
    assert (info.rank, info.world_size, info.local_rank, info.distributed) == (1, 2, 1, True)
    assert D.shard([0, 1, 2, 3, 4]) == [1, 3]
    with pytest.raises(InputError, match="each rank uses its own device"):
        D.init("cuda:1")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError, match="RANK"):
        D.world()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE"):
        D.world()


def test_item_seed_depends_on_the_name_only():
    a = D.item_seed("ann/0", 0)
    assert a == D.item_seed("ann/0", 0) and D.item_seed("ann/0", 5) == a + 5
    assert len({D.item_seed(f"p/{i}", 0) for i in range(100)}) == 100
    assert 0 <= a < 2 ** 31


def _write_targets(G, folder, n):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(n, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1))
    names = []
    for i, im in enumerate(to_pil(x.clamp(-1, 1))):
        sub = folder / ("ann" if i % 2 else "bob")
        sub.mkdir(parents=True, exist_ok=True)
        im.save(sub / f"{i}.png")
        names.append(sub / f"{i}.png")
    return sorted(names)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_equal_one_process(tmp_path):
    """torchrun --nproc_per_node=2 -m facelib project: exact partition by rank, rank/world_size
    recorded, one combined summary, rerun skips, results equal a single-process run."""
    from facelib.weights import save_generator

    G = make_small_generator()
    save_generator(G, tmp_path / "G.pt")
    src = tmp_path / "aligned"
    images = _write_targets(G, src, 5)
    opts = ["--steps", "4", "--lpips", "none", "--mse-weight", "1", "--batch-size", "4", "--quiet",
            "--device", "cpu", "--seed", "7"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "facelib",
           "project", str(src), str(tmp_path / "dist"), "--weights", str(tmp_path / "G.pt"), *opts]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("projected 5, skipped 0") == 1, run.stdout  # rank 0 prints the combined summary
    # the single-process reference: other batch composition (one batch of 4 + 1 instead of 3 + 2)
    single = project_folder(src, tmp_path / "single", G, progress=False, steps=4, lpips=None, mse_weight=1.0,
                            batch_size=4, seed=7)
    assert len(single.written) == 5
    for k, path in enumerate(images):
        rel = path.relative_to(src).with_suffix(".pt")
        meta = json.loads((tmp_path / "dist" / rel).with_suffix(".json").read_text())
        assert (meta["rank"], meta["world_size"]) == (k % 2, 2)  # sorted list, round robin
        a, b = load_projection(tmp_path / "dist" / rel), load_projection(tmp_path / "single" / rel)
        assert a.seeds == b.seeds == [D.item_seed(rel.with_suffix("").as_posix(), 7)]
        torch.testing.assert_close(a.wplus, b.wplus, rtol=1e-3, atol=2e-4)  # float rounding of other batches
        for na, nb in zip(a.noises, b.noises):
            torch.testing.assert_close(na, nb, rtol=1e-3, atol=2e-4)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert again.returncode == 0 and again.stdout.count("projected 0, skipped 5") == 1, again.stdout + again.stderr


def test_folder_result_does_not_depend_on_batch_size(tmp_path, single_thread):
    """Per-image losses, per-image parameters and elementwise Adam: each image follows its own
    path whatever batch it shares (seeds come from its path, not its position)."""
    G = make_small_generator()
    src = tmp_path / "aligned"
    images = _write_targets(G, src, 3)
    kw = dict(progress=False, steps=5, lpips=None, mse_weight=1.0)
    project_folder(src, tmp_path / "b1", G, batch_size=1, **kw)
    project_folder(src, tmp_path / "b3", G, batch_size=3, **kw)
    for path in images:
        rel = path.relative_to(src).with_suffix(".pt")
        a, b = load_projection(tmp_path / "b1" / rel), load_projection(tmp_path / "b3" / rel)
        # batched kernels round differently (~1e-7 per step); Adam's normalised steps carry that
        # to a few 1e-5 after 5 steps on |w| ~ 1
        torch.testing.assert_close(a.wplus, b.wplus, rtol=1e-3, atol=2e-4)
        assert abs(a.metrics[0]["psnr"] - b.metrics[0]["psnr"]) < 1e-3
        assert json.loads((tmp_path / "b1" / rel).with_suffix(".json").read_text())["world_size"] == 1
