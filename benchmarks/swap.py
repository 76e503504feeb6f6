"""Face swap: how far the identity moves for each choice of W+ rows, and swap speed.

    python benchmarks/swap.py --quick                       # CPU: row table (short), 256 px speed
    python benchmarks/swap.py --sizes 256 1024 --device cuda --json out/bench_swap.json
    python benchmarks/swap.py --no-speed --steps 200        # the row table only

Rows: the small untrained 64 px smoke generator (10 W+ rows) and the small random identity
network of the smoke runs. Targets and sources are random w (truncation 0.7, different seeds);
each row set is swapped with the default settings (LPIPS off: it needs ImageNet VGG weights).
The table gives, averaged over the pairs, the share of the way the identity cosine moved from
the target's to 1 (``id_moved``), the pixel MSE to the target outside and inside the face
region, and seconds per step. With random networks this shows how much each row band *can*
move an identity embedding and how much it disturbs the rest of the image, not what a trained
ArcFace sees; treat it as a sanity check of the default, not as evidence about real faces.

Speed: one full swap step (synthesis forward + backward, identity crop and network, masked
LPIPS with a VGG16 trunk built with ``pnet_rand=True``, masked MSE) on a config-f architecture
with random weights (the values do not change the cost) and an IResNet-50 identity network,
batch 1. Steps/s from ``on_step`` timestamps after ``--warmup`` steps.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROW_SETS = ("0-3", "4-8", "8-9", "0-8", "all")


def rows_table(steps: int, pairs: int, device: str) -> list[dict]:
    import torch

    from facelib.session import SMOKE_ARCFACE, smoke_generator
    from facelib.edit_inputs import random_latents
    from facelib.identity import build_arcface
    from facelib.swap import face_swap

    G = smoke_generator(0, device)
    id_net = build_arcface(**SMOKE_ARCFACE, seed=0, device=device)
    targets = random_latents(G, pairs, seed=1)
    with torch.no_grad():
        sources = G.synthesis(random_latents(G, pairs, seed=2).to(device)).clamp(-1, 1).cpu()
    out = []
    for rows in ROW_SETS:
        stamps: list[float] = []
        r = face_swap(G, id_net, sources, targets, steps=steps, rows=rows, lpips=None, judge=False, progress=False,
                      on_step=lambda *a: stamps.append(time.perf_counter()))
        inside = []
        for i in range(len(r)):
            m = r.face_masks[i]
            err = (r.images[i] - r.target_images[i]).square().mean(0, keepdim=True)
            inside.append(float((err * m).sum() / m.sum().clamp_min(1e-9)))
        row = {"rows": rows, "n_rows": len(r.config.rows),
               "id_moved": sum(m["id_moved"] for m in r.metrics) / len(r),
               "id_to_source": sum(m["id_to_source"] for m in r.metrics) / len(r),
               "id_start": sum(m["id_target_to_source"] for m in r.metrics) / len(r),
               "mse_outside_face": sum(m["mse_outside_face"] for m in r.metrics) / len(r),
               "mse_inside_face": sum(inside) / len(inside),
               "s_per_step": (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)}
        out.append(row)
        print(f"rows {rows:>4} ({row['n_rows']:2d}): id cos {row['id_start']:.3f} -> {row['id_to_source']:.3f} "
              f"(moved {row['id_moved']:.2f}), mse outside face {row['mse_outside_face']:.4f}, "
              f"inside {row['mse_inside_face']:.4f}, {row['s_per_step'] * 1000:.0f} ms/step", flush=True)
    return out


def speed(size: int, device: str, steps: int, warmup: int) -> dict:
    import warnings

    import lpips
    import torch

    from facelib.identity import build_arcface
    from facelib.stylegan2 import StyleGAN2Generator
    from facelib.swap import face_swap

    dev = torch.device(device)
    G = StyleGAN2Generator(size, seed=0).eval().requires_grad_(False).to(dev)
    id_net = build_arcface("iresnet50", seed=0, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).to(dev)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = G.mapping(torch.randn(2, G.style_dim, generator=g).to(dev))[:, None].repeat(1, G.n_latent, 1)
        source = G.synthesis(w[1:]).clamp(-1, 1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    stamps: list[float] = []

    def on_step(step, total, state):
        sync()
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    face_swap(G, id_net, source, w[:1].cpu(), steps=warmup + steps, lpips=lp, mask="ellipse", judge=False,
              progress=False, on_step=on_step)
    total = time.perf_counter() - t0
    timed = stamps[warmup:]
    sps = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    res = {"size": size, "device": str(dev), "steps_per_s": sps, "total_s": total, "steps": warmup + steps}
    if dev.type == "cuda":
        res["peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        res["gpu"] = torch.cuda.get_device_name(dev)
    print(f"{size:5d} px on {dev}: {sps:.2f} steps/s ({1 / sps:.3f} s/step; 200 default steps ~ "
          f"{200 / sps:.0f} s)" + (f", peak {res['peak_mb']:.0f} MB" if "peak_mb" in res else ""), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short row table, 256 px speed only")
    ap.add_argument("--steps", type=int, default=150, help="steps per row set")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--speed-steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--no-rows", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.sizes, args.speed_steps = 60, [256], 5
    report = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "dtype": "float32", "device": args.device}
    if not args.no_rows:
        print(f"rows: {args.pairs} random pairs, {args.steps} steps, smoke generator + random identity network")
        report["rows"] = rows_table(args.steps, args.pairs, args.device)
    if not args.no_speed:
        report["speed"] = [speed(s, args.device, args.speed_steps, args.warmup) for s in args.sizes]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print("wrote", args.json)


if __name__ == "__main__":
    main()
