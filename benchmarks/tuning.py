"""Pivotal tuning cost: seconds per photo, peak memory, and the size of the saved tuning.

    python benchmarks/tuning.py                                 # 256 and 1024 px, CPU, a few steps each
    python benchmarks/tuning.py --sizes 256 --steps 10 --json benchmarks/results/tuning_cpu.json
    python benchmarks/tuning.py --device cuda --steps 20

Weights are synthetic (config-f architecture, channel_multiplier 2; values do not change the
cost). Each size runs in a fresh subprocess: a W+ pivot (the mean w, 0 projection steps), then
``tune_generator`` for ``--steps`` steps, L2 only (LPIPS needs VGG16 weights that are not
downloaded here; with them each step adds one VGG16 forward + backward at 256 px). Only a few
steps run on a CPU, so the per-photo time is an extrapolation: setup (the generator copy,
first-step overheads) plus PTI's 350 steps times the median time of the steps after the
first; the script prints both the measured and the extrapolated figure.

Peak memory: growth of the process's peak RSS over the state before tuning (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA), beside ``facelib.memory.tuning_bytes``' estimate
(the figure ``tune_folder`` plans its batches with). File sizes: the saved tuning (float16 weight
difference of the synthesis tensors + pivot, noise maps and rendering) against the full
generator saved as a rosinality checkpoint (float32), and the float16 error measured on the
rendering of the pivot (restored from the file vs the tuned copy in memory).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _case(args: dict, queue) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    from facelib.projection import project
    from facelib.stylegan2 import StyleGAN2Generator
    from facelib.tuning import load_tuning, tune_generator
    from facelib.weights import save_generator

    device = torch.device(args["device"])
    size, steps = args["size"], args["steps"]
    G = StyleGAN2Generator(size, seed=0).to(device).eval()
    if args.get("files_only"):
        return queue.put(_files_only(G, size))
    batch = int(args.get("batch", 1))
    with torch.no_grad():
        target = G.sample(batch, seed=1).clamp(-1, 1).cpu()
        target = (target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    proj = project(G, target, steps=0, lpips=None, mse_weight=1.0, progress=False)
    base_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def on_step(step, total, state):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    t = tune_generator(G, proj, target, steps=steps, lr=3e-4, lpips=None, progress=False, on_step=on_step)
    total_s = time.perf_counter() - t0
    out = {"device": device.type, "size": size, "steps": steps, "threads": args["threads"], "batch": batch,
           "measured_s": total_s, "psnr_before": t.metrics[0]["psnr_before"], "psnr_after": t.metrics[0]["psnr"]}
    from facelib.memory import tuning_bytes

    estimate = tuning_bytes(G, batch, lpips=False, include_base=False)  # what tune_folder plans batches with
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        out["estimate_mb"] = estimate / 2 ** 20
    else:
        out["peak_rss_growth_mb"] = _rss_mb() - base_rss
        # the growth leaves out the generator itself, loaded before tuning
        out["estimate_mb"] = (estimate - 4 * sum(p.numel() for p in G.parameters())) / 2 ** 20
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    per_step = statistics.median(intervals) if intervals else total_s / max(steps, 1)
    setup = total_s - per_step * steps
    out.update(s_per_step=per_step, setup_s=setup, extrapolated_s_per_photo_350=setup + 350 * per_step)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.tune.pt"
        t.save(path)
        gpath = Path(d) / "g.pt"
        save_generator(G.cpu(), gpath)
        G.to(device)
        meta = json.loads(path.with_suffix(".json").read_text())
        back = load_tuning(path, G)
        with torch.no_grad():
            a = t.render(t.wplus[0], index=0)
            b = back.render(back.wplus[0], index=0)
        err = float((a - b).abs().max())
        mse = float((a - b).square().mean())
        n_params = sum(p.numel() for k, p in G.named_parameters() if not k.startswith("style."))
        out.update(tuning_file_mb=path.stat().st_size / 2 ** 20, generator_file_mb=gpath.stat().st_size / 2 ** 20,
                   synthesis_params=n_params, fp32_delta_mb=n_params * 4 / 2 ** 20,
                   stored_fp16=sum(v["dtype"] == "float16" for v in meta["deltas"][0].values()),
                   stored_fp32=sum(v["dtype"] == "float32" for v in meta["deltas"][0].values()),
                   fp16_render_max_abs_err=err,
                   fp16_render_psnr_db=(10 * float(torch.log10(torch.tensor(4.0 / mse))) if mse > 0 else float("inf")))
    queue.put(out)


def _files_only(G, size: int) -> dict:
    """File size and float16 error of a tuning whose deltas are synthetic (no optimisation run):
    every synthesis tensor changed by a random walk of 350 Adam steps at lr 3e-4
    (N(0, (3e-4 * sqrt(350))^2) per weight), the magnitude a real run's deltas have."""
    import dataclasses

    import torch

    from facelib.projection import project
    from facelib.tuning import load_tuning, tune_generator
    from facelib.weights import save_generator

    with torch.no_grad():
        target = G.sample(1, seed=1).clamp(-1, 1).cpu()
    proj = project(G, target, steps=0, lpips=None, mse_weight=1.0, progress=False)
    t0 = tune_generator(G, proj, target, steps=0, lpips=None, progress=False)
    g = torch.Generator().manual_seed(0)
    delta = {k: 3e-4 * 350 ** 0.5 * torch.randn(p.shape, generator=g)
             for k, p in G.named_parameters() if not k.startswith("style.")}
    from facelib.tuning import _apply_deltas  # noqa: PLC2701 - benchmark of the module's own restore path

    tuned = _apply_deltas(G, delta, t0.weights_sha256, "synthetic")
    t = dataclasses.replace(t0, generators=[tuned], deltas=[delta])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.tune.pt"
        t.save(path)
        gpath = Path(d) / "g.pt"
        save_generator(G, gpath)
        back = load_tuning(path, G)
        a, b = t.render(t.wplus[0]), back.render(back.wplus[0])
        mse = float((a - b).square().mean())
        n_params = sum(p.numel() for k, p in G.named_parameters() if not k.startswith("style."))
        return {"device": "cpu", "size": size, "steps": 0, "synthetic_delta": True,
                "tuning_file_mb": path.stat().st_size / 2 ** 20, "generator_file_mb": gpath.stat().st_size / 2 ** 20,
                "synthesis_params": n_params, "fp32_delta_mb": n_params * 4 / 2 ** 20,
                "fp16_render_max_abs_err": float((a - b).abs().max()),
                "fp16_render_psnr_db": 10 * float(torch.log10(torch.tensor(4.0 / mse))) if mse > 0 else float("inf")}


def run_case(**kw) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(kw, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return {"error": f"exit code {p.exitcode}", **kw}
    return q.get()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="steps per size (one value for all; default 6 at 256 px, 3 at 1024 px on CPU, 30 on CUDA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="photos tuned together (peak memory and its estimate; "
                                                          "the per-photo time is then per batch)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--files-only", type=int, nargs="*", default=[], metavar="SIZE",
                    help="for these sizes only measure the saved file (synthetic deltas, no optimisation): "
                         "for machines where a full tuning step does not fit")
    args = ap.parse_args()
    import torch

    rows = []
    print(f"{'dev':4} {'size':>5} {'steps':>5} {'s/step':>8} {'setup s':>8} {'s/photo@350':>12} {'peak MiB':>9} "
          f"{'est MiB':>8} {'tune MiB':>9} {'G MiB':>8} {'fp16 err':>9} {'fp16 dB':>8}")
    for k, size in enumerate(args.sizes):
        if args.steps:
            steps = args.steps[min(k, len(args.steps) - 1)]
        else:
            steps = 30 if args.device.startswith("cuda") else (6 if size <= 256 else 3)
        r = run_case(size=size, steps=steps, device=args.device, threads=args.threads, batch=args.batch,
                     files_only=size in args.files_only)
        r["loadavg_1min"] = os.getloadavg()[0]
        rows.append(r)
        if r.get("synthetic_delta"):
            print(f"{'cpu':4} {size:>5} {'-':>5} {'-':>8} {'-':>8} {'-':>12} {'-':>9} {'-':>8} {r['tuning_file_mb']:>9.2f} "
                  f"{r['generator_file_mb']:>8.1f} {r['fp16_render_max_abs_err']:>9.2e} "
                  f"{r['fp16_render_psnr_db']:>8.1f}  (file only, synthetic deltas)", flush=True)
            continue
        if "error" in r:
            print(f"{args.device:4} {size:>5} {steps:>5}  failed: {r['error']}", flush=True)
            continue
        peak = r.get("peak_mb", r.get("peak_rss_growth_mb"))
        print(f"{r['device']:4} {size:>5} {steps:>5} {r['s_per_step']:>8.2f} {r['setup_s']:>8.2f} "
              f"{r['extrapolated_s_per_photo_350']:>12.0f} {peak:>9.0f} {r['estimate_mb']:>8.0f} {r['tuning_file_mb']:>9.2f} "
              f"{r['generator_file_mb']:>8.1f} {r['fp16_render_max_abs_err']:>9.2e} {r['fp16_render_psnr_db']:>8.1f}",
              flush=True)
    print("s/photo@350 is extrapolated (setup + 350 x median s/step); LPIPS off (no VGG16 weights here); "
          f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.")
    if args.json:
        from facelib._io import atomic_path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"torch": torch.__version__, "platform": platform.platform(),
                                       "processor": platform.processor(), "lpips": None, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
