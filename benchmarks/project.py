"""Projection speed/memory, and PSNR-vs-steps for each learning-rate schedule.

    python benchmarks/project.py --quick                   # CPU-friendly: 256 px speed, short curves
    python benchmarks/project.py --sizes 256 1024 --batches 1 4 --device all --json out/bench_project.json
    python benchmarks/project.py --no-speed                # curves only

Speed: ``facelib.project`` on a config-f architecture (channel multiplier 2, 512-d styles,
random weights: the values do not change the cost) with LPIPS (VGG16 trunk built with
``pnet_rand=True``: the same cost as the ImageNet one, nothing downloaded), MSE, noise
regularisation and noise renormalisation, i.e. one full projection step. Steps/s is taken
from ``on_step`` timestamps after ``--warmup`` steps; peak memory is measured per case in a
fresh subprocess (peak RSS growth on CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

Curves: the synthetic-truth task of the tests. A small random generator renders targets from
known W+ latents (a random w per image, every row perturbed); each schedule and learning rate
projects them with MSE only (LPIPS needs ImageNet VGG weights, which a benchmark cannot
assume) for several run lengths. The table gives mean PSNR (dB) of the kept step per run
length, and, for the longest run, PSNR of the evaluated rendering at intermediate steps.

Speed options (``ProjectConfig.precision`` / ``tf32`` / ``compile``): ``--variants`` times each
beside plain fp32 in the same run (``fp32`` is the figure before these options existed; ``tf32``
is CUDA only; the default is fp32 and bf16 on CPU, all five on CUDA), and the precision table
projects the synthetic-truth task with each precision so the quality can be compared with fp32.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------
# Speed
# ----------------------------------------------------------------------------------------

def _speed_case(args: dict, queue) -> None:
    import warnings

    import torch

    from facelib.projection import project
    from facelib.stylegan2 import StyleGAN2Generator

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    base_rss = _rss_mb()
    G = StyleGAN2Generator(args["size"], seed=0).eval().requires_grad_(False).to(device)
    lp = None
    if args["lpips"]:
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).to(device)
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(args["batch"], 3, args["size"], args["size"], generator=g) * 2 - 1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def on_step(step, total, state):
        sync()
        stamps.append(time.perf_counter())

    total = args["warmup"] + args["steps"]
    variant = args.get("variant", "fp32")
    opts = {"precision": variant if variant in ("bf16", "fp16") else "fp32", "tf32": variant == "tf32",
            "compile": variant == "compile"}
    project(G, targets, steps=total, lpips=lp, progress=False, on_step=on_step, scheduler="constant",
            n_mean_latent=1000, **opts)
    timed = stamps[args["warmup"]:]
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = _rss_mb() - base_rss
    queue.put({"steps_per_s": steps_per_s, "s_per_step": 1.0 / steps_per_s, "peak_mb": peak})


def run_speed(sizes, batches, devices, steps, warmup, threads, use_lpips, variants=None) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for device in devices:
        for variant in (variants or (["fp32", "bf16"] if device == "cpu" else ["fp32", "tf32", "bf16", "fp16", "compile"])):
            if variant == "tf32" and device == "cpu":
                continue
            for size in sizes:
                for batch in batches:
                    q = ctx.Queue()
                    case = {"size": size, "batch": batch, "device": device, "steps": steps, "warmup": warmup,
                            "threads": threads, "lpips": use_lpips, "variant": variant}
                    p = ctx.Process(target=_speed_case, args=(case, q))
                    p.start()
                    p.join()
                    if p.exitcode != 0:
                        res = {"error": f"exit code {p.exitcode}"}
                    else:
                        res = q.get()
                    row = {"device": device, "size": size, "batch": batch, "variant": variant, **res}
                    rows.append(row)
                    if "error" in row:
                        print(f"  {device:5s} {variant:7s} {size:5d} px  batch {batch}: {row['error']}", flush=True)
                    else:
                        base = next((r for r in rows if r["variant"] == "fp32" and r["device"] == device
                                     and r["size"] == size and r["batch"] == batch and "error" not in r), row)
                        print(f"  {device:5s} {variant:7s} {size:5d} px  batch {batch}: {row['steps_per_s']:7.3f} steps/s "
                              f"({row['steps_per_s'] / base['steps_per_s']:.2f}x fp32) "
                              f"({row['s_per_step']:.3f} s/step, {row['steps_per_s'] * batch:.3f} images*steps/s), "
                              f"peak {row['peak_mb']:.0f} MB", flush=True)
    return rows


# ----------------------------------------------------------------------------------------
# PSNR vs steps
# ----------------------------------------------------------------------------------------
# What the figures decide, and what they cannot. On this task (random generator, MSE only) a
# constant lr 0.1 wins at 100 and 300 steps (every decaying schedule spends steps at a small
# rate), rampupdown 0.1 trails it by about 0.5 dB, and exp decaying to 1 % loses about 2 dB at
# 300 steps (hence exp's default decay to 10 %). The product default (ProjectConfig) must also
# suit real FFHQ generators with LPIPS, where both reference projectors use lr 0.1 with the
# rampup/rampdown schedule: the cool-down lets a noisy perceptual objective settle, and 0.1 is
# tuned to a trained mapping network's w scale. The default is therefore rampupdown at 0.1 (close
# to the best here, validated on real generators); scheduler="constant" is the choice for short
# runs on random or small generators.

def synthetic_task(resolution: int, n: int, seed: int = 1):
    """(G, targets, true W+): the tests' small generator and targets rendered from known W+."""
    import torch

    from facelib.stylegan2 import StyleGAN2Generator

    G = StyleGAN2Generator(resolution=resolution, style_dim=64, n_mlp=2, channel_max=32, seed=0)
    with torch.no_grad():
        for m in G.modules():
            if m.__class__.__name__ == "NoiseInjection":
                m.weight.fill_(0.1)
    G.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(n, G.style_dim, generator=g))
        wplus = w[:, None].repeat(1, G.n_latent, 1) + 0.3 * w.std() * torch.randn(n, G.n_latent, G.style_dim,
                                                                                   generator=g)
        targets = G.synthesis(wplus).clamp(-1, 1)
    return G, targets, wplus


def run_curves(totals, schedules, resolution, n_images, threads, checkpoints) -> dict:
    import math

    import torch

    from facelib.projection import project

    torch.set_num_threads(threads)
    G, targets, _ = synthetic_task(resolution, n_images)
    start = project(G, targets, steps=0, lpips=None, mse_weight=1.0, progress=False)
    start_psnr = sum(m["psnr"] for m in start.metrics) / n_images
    longest = max(totals)
    rows = []
    for sched, lr in schedules:
        row = {"scheduler": sched, "lr": lr, "final": {}, "curve": {}, "seconds": {}}
        for total in totals:
            t0 = time.perf_counter()
            p = project(G, targets, steps=total, lpips=None, mse_weight=1.0, scheduler=sched, lr=lr, progress=False)
            row["seconds"][total] = time.perf_counter() - t0
            row["final"][total] = sum(m["psnr"] for m in p.metrics) / n_images
            if total == longest:
                for c in checkpoints:
                    if c <= total:
                        vals = [10 * math.log10(4.0 / h["mse"][c - 1]) for h in p.history]
                        row["curve"][c] = sum(vals) / n_images
        rows.append(row)
        fin = "  ".join(f"{row['final'][t]:6.2f}" for t in totals)
        print(f"  {sched:10s} lr {lr:<5g} final@{'/'.join(map(str, totals))}: {fin}", flush=True)
    return {"resolution": resolution, "n_images": n_images, "start_psnr": start_psnr, "totals": list(totals),
            "checkpoints": [c for c in checkpoints if c <= longest], "rows": rows}


def run_precision_quality(precisions, steps, resolution, n_images, threads) -> list[dict]:
    """Mean PSNR of the synthetic-truth task projected with each precision (constant lr 0.1, MSE)."""
    import torch

    from facelib.projection import project

    torch.set_num_threads(threads)
    G, targets, _ = synthetic_task(resolution, n_images)
    rows = []
    for prec in precisions:
        t0 = time.perf_counter()
        p = project(G, targets, steps=steps, lpips=None, mse_weight=1.0, scheduler="constant", precision=prec,
                    progress=False)
        rows.append({"precision": prec, "steps": steps, "psnr": [m["psnr"] for m in p.metrics],
                     "mean_psnr": sum(m["psnr"] for m in p.metrics) / len(p), "seconds": time.perf_counter() - t0})
        print(f"  {prec:5s} {steps} steps: mean PSNR {rows[-1]['mean_psnr']:6.2f} dB "
              f"({rows[-1]['mean_psnr'] - rows[0]['mean_psnr']:+.2f} vs {rows[0]['precision']}), "
              f"{rows[-1]['seconds']:.1f} s", flush=True)
    return rows


def print_curve_table(res: dict) -> None:
    totals, cps = res["totals"], res["checkpoints"]
    longest = max(totals)
    head = (f"{'schedule':10s} {'lr':>5s} | " + " ".join(f"{'@' + str(t):>7s}" for t in totals)
            + f" | run of {longest}: " + " ".join(f"{'s' + str(c):>7s}" for c in cps))
    print(f"\nPSNR (dB), {res['resolution']} px synthetic truth, {res['n_images']} images, MSE only; "
          f"start (mean latent) {res['start_psnr']:.2f} dB")
    print("  '@T' = kept step of a T-step run; 'sK' = rendering at step K of the longest run")
    print(head)
    print("-" * len(head))
    best = {t: max(r["final"][t] for r in res["rows"]) for t in totals}
    for r in res["rows"]:
        fin = " ".join(f"{r['final'][t]:6.2f}{'*' if r['final'][t] == best[t] else ' '}" for t in totals)
        cur = " ".join(f"{r['curve'].get(c, float('nan')):7.2f}" for c in cps)
        pad = " " * (len(str(longest)) + 9)
        print(f"{r['scheduler']:10s} {r['lr']:5g} | {fin} | {pad}{cur}")
    print("  * = best for that run length")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", help="default 256 1024 (--quick: 256)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per speed case")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                    help="all = CPU, plus CUDA when present")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-lpips", action="store_true", help="time without the LPIPS term")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-curves", action="store_true")
    ap.add_argument("--curve-totals", type=int, nargs="+", help="run lengths (default 100 300 1000; --quick: 100 300)")
    ap.add_argument("--curve-lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    ap.add_argument("--curve-res", type=int, default=32)
    ap.add_argument("--curve-images", type=int, default=4)
    ap.add_argument("--quick", action="store_true",
                    help="CPU-friendly: 256 px only, 3 timed steps, curve runs of 100 and 300 steps")
    ap.add_argument("--variants", nargs="+", help="speed options: fp32 tf32 bf16 fp16 compile "
                                                  "(default: fp32 bf16 on CPU, all on CUDA)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"],
                    help="precisions of the quality table (synthetic truth)")
    ap.add_argument("--precision-steps", type=int, default=300)
    ap.add_argument("--no-precision", action="store_true", help="skip the precision quality table")
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args(argv)

    import torch

    if args.quick:
        args.steps, args.warmup = min(args.steps, 3), 1
    if args.sizes is None:
        args.sizes = [256] if args.quick else [256, 1024]
    if args.curve_totals is None:
        args.curve_totals = [100, 300] if args.quick else [100, 300, 1000]
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if not torch.cuda.is_available():
        devices = [d for d in devices if d != "cuda"]
    out = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "threads": args.threads, "dtype": "float32",
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if not args.no_speed and devices:
        print(f"projection step speed (config-f, random weights, LPIPS {'off' if args.no_lpips else 'on'}, "
              f"{args.threads} CPU threads)", flush=True)
        out["speed"] = run_speed(args.sizes, args.batches, devices, args.steps, args.warmup, args.threads,
                                 not args.no_lpips, args.variants)
    if not args.no_precision:
        print(f"\nprojection quality by precision (synthetic truth, {args.curve_res} px, {args.curve_images} images)",
              flush=True)
        out["precision"] = run_precision_quality(args.precisions, args.precision_steps, args.curve_res,
                                                 args.curve_images, args.threads)
    if not args.no_curves:
        schedules = [(s, lr) for s in ("constant", "exp", "cosine", "rampupdown") for lr in args.curve_lrs]
        checkpoints = [25, 50, 100, 200, 300, 500, 1000]
        print("\nPSNR vs steps (synthetic truth)", flush=True)
        out["curves"] = run_curves(args.curve_totals, schedules, args.curve_res, args.curve_images, args.threads,
                                   checkpoints)
        print_curve_table(out["curves"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
