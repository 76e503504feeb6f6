"""facelib.distributed and the torchrun launch of the batch commands (CPU, gloo)."""
from __future__ import annotations

import json
import os
import re
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


_BESIDE_SCRIPT = """
import sys
from facelib import distributed as D
from facelib.projection_folder import project_folder
from facelib.weights import load_generator

info = D.init("cpu")
G = load_generator(sys.argv[1])
r = project_folder(sys.argv[2], sys.argv[3], G, steps=int(sys.argv[4]), lpips=None, mse_weight=1.0,
                   progress=False, beside=True)
print(f"rank {info.rank}: dst {r.dst} written {len(r.written)} skipped {len(r.skipped)}", flush=True)
D.finish()
"""


@pytest.mark.slow
def test_torchrun_ranks_agree_on_the_beside_folder(tmp_path):
    """Under torchrun the ranks agree (an exchange round before the work) on writing beside
    results of other settings, and the final gather still combines every rank's results."""
    from facelib.weights import save_generator

    G = make_small_generator()
    save_generator(G, tmp_path / "G.pt")
    src = tmp_path / "aligned"
    _write_targets(G, src, 3)
    (tmp_path / "run.py").write_text(_BESIDE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def launch(steps):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(tmp_path / "run.py"), str(tmp_path / "G.pt"), str(src), str(tmp_path / "latents"), str(steps)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        return sorted(line for line in run.stdout.splitlines() if line.startswith("rank "))

    first = launch(2)
    assert [ln.split(": ", 1)[1] for ln in first] == [f"dst {tmp_path / 'latents'} written 3 skipped 0"] * 2
    second = launch(3)
    dsts = {ln.split("dst ")[1].split(" written")[0] for ln in second}
    assert len(dsts) == 1 and next(iter(dsts)).startswith(str(tmp_path / "latents@")), second
    assert all(ln.endswith("written 3 skipped 0") for ln in second), second


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


# ----------------------------------------------------------------------------------------
# Stopping together: the store-based exchange and a rank interrupted mid-run
# ----------------------------------------------------------------------------------------

def _pair(timeout=5.0):
    import torch.distributed as dist

    store = dist.HashStore()
    return [D.Exchange(dist.PrefixStore("run/", store), r, 2, timeout=timeout, tick=0.02) for r in range(2)]


def test_exchange_gathers_in_rank_order():
    import threading

    a, b = _pair()
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(1, b.gather({"rank": 1, "paths": ["x"]})))
    t.start()
    got[0] = a.gather({"rank": 0})
    t.join(5)
    assert got[0] == got[1] == [{"rank": 0}, {"rank": 1, "paths": ["x"]}]
    assert a.gathered and b.gathered and a.stopped() is None


def test_exchange_rounds_keep_their_own_results():
    """Each gather is its own round: a second call never returns the first call's values, and only
    a final round counts as the rank having reported."""
    import threading

    a, b = _pair()
    got = {}

    def rank1():
        got["b1"] = b.gather("b-first", final=False)
        got["b2"] = b.gather("b-second")

    t = threading.Thread(target=rank1)
    t.start()
    got["a1"] = a.gather("a-first", final=False)
    assert not a.posted and not a.gathered
    got["a2"] = a.gather("a-second")
    t.join(5)
    assert got["a1"] == got["b1"] == ["a-first", "b-first"]
    assert got["a2"] == got["b2"] == ["a-second", "b-second"]
    assert a.posted and a.gathered and b.gathered


def test_exchange_names_a_rank_that_never_reports():
    import time

    from facelib.errors import LaunchError

    a, _ = _pair(timeout=0.3)  # rank 1 never beats nor reports (as after kill -9)
    t = time.monotonic()
    with pytest.raises(LaunchError, match=r"rank 1 of 2 gave no sign of life for 0.3 s and never reported"):
        a.gather("mine")
    assert time.monotonic() - t < 3


def test_exchange_waits_for_a_live_rank_past_the_timeout():
    """A slow rank that beats is waited for; the timeout is about silence, not duration."""
    import threading
    import time

    a, b = _pair(timeout=0.3)
    done = threading.Event()

    def slow_rank():
        for _ in range(40):  # 0.8 s of work, beating
            b.beat()
            time.sleep(0.02)
        b.gather("late")
        done.set()

    t = threading.Thread(target=slow_rank)
    t.start()
    assert a.gather("early") == ["early", "late"]
    t.join(5)
    assert done.is_set()


def test_exchange_first_stop_wins_and_ends_the_wait():
    a, b = _pair()
    stop = b.announce()  # rank 1 was interrupted
    assert stop.here and stop.note() == "rank 1 of 2 was interrupted; the other ranks were told to stop"
    assert a.announce("was terminated (SIGTERM)").rank == 1  # the first record stays
    seen = a.stopped()
    assert (seen.rank, seen.here) == (1, False)
    assert seen.note() == "rank 0 of 2 stopped because rank 1 of 2 was interrupted"
    with pytest.raises(KeyboardInterrupt, match="rank 1 of 2 was interrupted"):
        a.gather("x")


def test_single_process_has_no_exchange(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    info = D.init("cpu")
    assert not info.distributed and info.backend is None
    assert D.interrupted() is None and D.announce_interrupt() is None
    assert D.stop_note() is None
    import signal

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setenv(D.TIMEOUT_ENV, "soon")
    with pytest.raises(InputError, match="FACELIB_DIST_TIMEOUT"):
        D.Exchange(None, 0, 1)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(tmp_path, sig, victim, extra_env=None):
    """Two ranks (gloo, the environment set by hand as torchrun sets it; rank 0 hosts the
    store) project 8 images; once a first result is complete, ``sig`` goes to rank ``victim``.
    Returns (return codes, stderr of each rank, seconds from the signal to both exits)."""
    import time

    from facelib.weights import save_generator

    G = make_small_generator()
    save_generator(G, tmp_path / "G.pt")
    _write_targets(G, tmp_path / "aligned", 8)
    out = tmp_path / "out"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               **(extra_env or {})}
        env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        cmd = [sys.executable, "-m", "facelib", "project", str(tmp_path / "aligned"), str(out), "--weights",
               str(tmp_path / "G.pt"), "--steps", "150", "--lpips", "none", "--mse-weight", "1", "--batch-size", "1",
               "--quiet", "--device", "cpu"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                      env=env))
    try:
        deadline = time.monotonic() + 120
        while not list(out.rglob("*.json")):  # the first image is finished: both ranks are working
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs]
            time.sleep(0.05)
        procs[victim].send_signal(sig)
        t = time.monotonic()
        outputs = [p.communicate(timeout=60) for p in procs]
        elapsed = time.monotonic() - t
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in procs], [o[1] for o in outputs], elapsed


@pytest.mark.slow
def test_sigint_on_one_rank_stops_the_other(tmp_path):
    """SIGINT on rank 1 mid-run: both exit 130 within seconds, each prints its own summary,
    rank 0 names rank 1, every finished result is a complete set, and a rerun goes on from them."""
    import signal

    from facelib.weights import load_generator

    codes, (err0, err1), elapsed = _launch_two(tmp_path, signal.SIGINT, 1)
    assert codes == [130, 130], (codes, err0[-2000:], err1[-2000:])
    assert elapsed < 30, elapsed  # not the collective's 30 minutes
    assert "rank 0 of 2 stopped because rank 1 of 2 was interrupted" in err0, err0[-2000:]
    assert "rank 1 of 2 was interrupted; the other ranks were told to stop" in err1, err1[-2000:]
    for err in (err0, err1):
        assert "INTERRUPTED: projected" in err and "not reached" in err and "Traceback" not in err, err[-2000:]
    # the JSON, written last, marks a complete set; a set being written when the interrupt came
    # may lack it (it is not counted as finished and is redone)
    out = tmp_path / "out"
    finished = sorted(p.with_suffix("") for p in out.rglob("*.json"))
    reported = [int(re.search(r"INTERRUPTED: projected (\d+),", err).group(1)) for err in (err0, err1)]
    assert finished and len(finished) == sum(reported) < 8, (finished, reported)
    for base in finished:
        assert base.with_suffix(".png").is_file()
        load_projection(base.with_suffix(".pt"))
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".pt", ".json", ".png")]
    single = project_folder(tmp_path / "aligned", out, load_generator(tmp_path / "G.pt"), progress=False, steps=150,
                            lpips=None, mse_weight=1.0, batch_size=8)
    assert len(single.skipped) == len(finished) and len(single.written) == 8 - len(finished)


@pytest.mark.slow
def test_a_killed_rank_is_named_after_the_timeout(tmp_path):
    """kill -9 of rank 1 (no handler runs): rank 0 finishes its share, then stops waiting for
    rank 1 after $FACELIB_DIST_TIMEOUT seconds with one clear error line naming it."""
    import signal

    codes, (err0, _), elapsed = _launch_two(tmp_path, signal.SIGKILL, 1, {"FACELIB_DIST_TIMEOUT": "3"})
    assert codes[1] == -signal.SIGKILL and codes[0] == 1, (codes, err0[-2000:])
    assert "error: rank 1 of 2 gave no sign of life for 3 s and never reported its results" in err0, err0[-2000:]
    assert "Traceback" not in err0 and elapsed < 50
    assert len(list((tmp_path / "out").rglob("*.json"))) >= 4  # rank 0's whole share is finished


def test_reruns_on_one_store_never_see_an_earlier_launch(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    store = dist.HashStore()  # a store that outlives launches (an external rendezvous server)
    first = [D.launch_prefix(store, 2) for _ in range(2)]  # both ranks of launch 0
    assert first == ["facelib/job/0/0/"] * 2
    old = D.Exchange(dist.PrefixStore(first[1], store), 1, 2, timeout=5, tick=0.02)
    old.announce()  # launch 0 was interrupted
    second = [D.launch_prefix(store, 2) for _ in range(2)]
    assert second == ["facelib/job/0/1/"] * 2
    assert D.Exchange(dist.PrefixStore(second[0], store), 0, 2, timeout=5, tick=0.02).stopped() is None
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun restarted the workers
    assert D.launch_prefix(store, 2) == "facelib/job/1/0/"


def test_a_stop_after_every_rank_reported_changes_nothing():
    import threading
    import time

    a, b = _pair()
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(1, b.gather("b")))
    t.start()
    while not b.posted:
        time.sleep(0.01)
    b.announce()  # rank 1 is interrupted after it reported
    assert a.gather("a") == ["a", "b"]
    t.join(5)
    assert got[1] == ["a", "b"]
