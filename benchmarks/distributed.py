"""torchrun scaling of ``python -m facelib project``: images/s with 1 and 2 processes.

    python benchmarks/distributed.py                          # CPU, 8 images, 64 px smoke generator
    python benchmarks/distributed.py --images 16 --steps 50 --repeats 3 --json benchmarks/results/distributed_cpu.json
    python benchmarks/distributed.py --device cuda --nprocs 1 2 --weights G.pt   # on a machine with 2 GPUs

Every run projects the same folder of ``--images`` targets (renderings of the generator, so
nothing needs downloading) into a fresh output folder and is timed end to end, start-up
included, as a user would run it:

* ``single``: ``python -m facelib project`` in one process using every CPU thread, the only
  way to run it before torchrun support (the "before" figure, measured in the same run);
* ``torchrun xN``: ``torchrun --standalone --nproc_per_node=N -m facelib project``; on CPU
  each rank gets ``threads / N`` threads (``OMP_NUM_THREADS``) so the cores are not
  oversubscribed; on CUDA each rank has its own GPU.

Each figure is the best and the median of ``--repeats`` runs (the CPU may be shared with other
work; the best is the least disturbed run). LPIPS is off (``--lpips none``) so the figures do
not depend on local VGG weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _make_inputs(folder: Path, n: int, weights: str | None) -> Path | None:
    """Write ``n`` target images into ``folder`` (and the generator, when none is given); returns
    the generator file to pass as --weights (None = the CLI's smoke generator)."""
    import torch

    from facelib.session import smoke_generator
    from facelib.grids import to_pil
    from facelib.weights import load_generator

    G = load_generator(weights) if weights else smoke_generator(0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k in range(n):
            w = G.mapping(torch.randn(1, G.style_dim, generator=g))
            img = G.synthesis(w[:, None].repeat(1, G.n_latent, 1)).clamp(-1, 1)
            to_pil(img)[0].save(folder / f"{k:04d}.png")
    return Path(weights) if weights else None


def _time(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    dt = time.perf_counter() - t
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
    return dt, run.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads in all")
    ap.add_argument("--weights", help="generator checkpoint (default: the 64 px smoke generator)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="facelib-bench-dist-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        weights = _make_inputs(src, args.images, args.weights)
        common = ["project", str(src), "OUT", "--steps", str(args.steps), "--lpips", "none", "--mse-weight", "1",
                  "--batch-size", str(args.batch_size), "--quiet", "--device", args.device]
        if weights:
            common += ["--weights", str(weights)]
        cases = [("single", 1, [sys.executable, "-m", "facelib"], args.threads)]
        cases += [(f"torchrun x{n}", n, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          f"--nproc_per_node={n}", "-m", "facelib"], max(1, args.threads // n))
                  for n in args.nprocs]
        print(f"facelib project, {args.images} images, {args.steps} steps, batch {args.batch_size}, {args.device}, "
              f"{args.threads} CPU threads in all; best and median of {args.repeats} runs (start-up included)")
        for label, n, launcher, threads in cases:
            times = []
            for rep in range(args.repeats):
                out = Path(tmp) / f"out-{label.replace(' ', '')}-{rep}"
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
                dt, stdout = _time(launcher + [c if c != "OUT" else str(out) for c in common], env)
                if f"projected {args.images}," not in stdout:
                    raise RuntimeError(f"{label}: unexpected summary {stdout!r}")
                times.append(dt)
            best, med = args.images / min(times), args.images / statistics.median(times)
            rows.append({"case": label, "processes": n, "threads_per_process": threads, "seconds": times,
                         "images_per_s_best": best, "images_per_s_median": med})
            base = rows[0]
            print(f"  {label:<12} {n} process(es) x {threads} thread(s): {best:6.3f} images/s best, {med:6.3f} median "
                  f"({best / base['images_per_s_best']:.2f}x single)", flush=True)
    if args.json:
        from facelib._io import atomic_path

        env = {"device": args.device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "python": platform.python_version(), "images": args.images, "steps": args.steps,
               "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
               "generator": args.weights or "smoke (64 px)"}
        with atomic_path(args.json) as tmp_json:
            tmp_json.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
