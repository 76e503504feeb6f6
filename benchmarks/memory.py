"""Projection memory: facelib.memory's estimate against the measured peak.

    python benchmarks/memory.py                                # CPU: 128/256 px, batch 1 and 2, 512 px batch 1
    python benchmarks/memory.py --cases 1024x1 1024x4 --device cuda --json benchmarks/results/memory_cuda.json
    python benchmarks/memory.py --compare benchmarks/results/proj_cuda.json   # estimate vs recorded CUDA peaks

Each case runs in a fresh subprocess: a config-f generator (channel multiplier 2, random weights:
the values do not change the cost) of the given side, LPIPS with a VGG16 trunk built with
``pnet_rand=True`` (same cost as the ImageNet one, nothing downloaded) unless ``--no-lpips``, and
``--steps`` projection steps. Measured: the process's peak resident memory (``ru_maxrss``, which
includes Python and torch themselves) on CPU; ``torch.cuda.max_memory_allocated`` on CUDA. The
estimate is ``facelib.memory.projection_bytes`` (with the interpreter's base on CPU).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _case(args: dict, queue) -> None:
    import warnings

    import torch

    from facelib.memory import projection_bytes
    from facelib.projection import project
    from facelib.stylegan2 import StyleGAN2Generator

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    G = StyleGAN2Generator(args["size"], seed=0).eval().requires_grad_(False).to(device)
    lp = None
    if args["lpips"]:
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).to(device)
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(args["batch"], 3, args["size"], args["size"], generator=g) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    project(G, targets, steps=args["steps"], lpips=lp, progress=False, n_mean_latent=1000)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = projection_bytes(G, args["batch"], lpips=args["lpips"], include_base=device.type == "cpu")
    queue.put({"measured_mb": peak / 2 ** 20, "estimate_mb": est / 2 ** 20})


def compare(path: str) -> None:
    """Estimate (models on the device, no interpreter base) against recorded CUDA/CPU peaks."""
    from facelib.memory import projection_bytes
    from facelib.stylegan2 import StyleGAN2Generator

    rows = json.loads(Path(path).read_text())["speed"]
    print(f"{'device':>6} {'case':>8} {'estimate':>10} {'recorded':>10} {'est/rec':>8}")
    for r in rows:
        G = StyleGAN2Generator(r["size"], seed=0)
        est = projection_bytes(G, r["batch"], lpips=True, include_base=r["device"] == "cpu") / 2 ** 20
        print(f"{r['device']:>6} {r['size']:>4}x{r['batch']:<3} {est:8.0f} MB {r['peak_mb']:8.0f} MB "
              f"{est / r['peak_mb']:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["128x1", "128x2", "256x1", "256x2", "512x1"],
                    help="SIDExBATCH cases")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--no-lpips", action="store_true")
    ap.add_argument("--json", help="write the rows here (e.g. benchmarks/results/memory_cpu.json)")
    ap.add_argument("--compare", help="only print the estimate against the peaks recorded in a "
                                      "benchmarks/project.py JSON (its 'speed' rows, LPIPS on)")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare)
        return
    ctx = mp.get_context("spawn")
    rows = []
    print(f"{'case':>10} {'estimate':>10} {'measured':>10} {'est/meas':>9}")
    for case in args.cases:
        size, _, batch = case.partition("x")
        spec = {"size": int(size), "batch": int(batch or 1), "device": args.device, "steps": args.steps,
                "threads": args.threads, "lpips": not args.no_lpips}
        q = ctx.Queue()
        p = ctx.Process(target=_case, args=(spec, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            row = {**spec, "error": f"exit code {p.exitcode}"}
            print(f"{case:>10} error {p.exitcode}", flush=True)
        else:
            row = {**spec, **q.get()}
            print(f"{case:>10} {row['estimate_mb']:8.0f} MB {row['measured_mb']:8.0f} MB "
                  f"{row['estimate_mb'] / row['measured_mb']:9.2f}", flush=True)
        rows.append(row)
    if args.json:
        import torch

        out = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
               "device": args.device, "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
