"""Generator speed and memory: synthesis forward, and forward + backward w.r.t. W+.

    python benchmarks/generator.py                       # 256 px, batch 1 and 4, CPU (+ CUDA if present)
    python benchmarks/generator.py --sizes 256 1024 --threads 2 --reference ~/src/stylegan2-pytorch
    python benchmarks/generator.py --json out/bench_generator.json

Weights are synthetic (config-f architecture, channel_multiplier 2; the values do not change
the cost). Each figure is the median of ``--repeats`` runs after one warm-up. "fwd+bwd" is
``img.square().mean().backward()`` with the generator's parameters frozen, which is what
projection and face swap do (only W+ gets a gradient). Peak memory is measured per case in a
fresh subprocess (peak RSS growth on CPU, ``max_memory_allocated`` on CUDA).

``--reference PATH`` also times rosinality/stylegan2-pytorch's own CPU path, imported from a
local checkout at PATH (nothing is copied into this repository). Its ops try to compile a CUDA
extension at import; the benchmark stubs the compile step out because the CPU path never uses it.

``--variants`` times the default implementation with each speed option of projection
(``ProjectConfig.precision`` / ``tf32`` / ``compile``) beside plain fp32, in the same run:
``fp32`` (before), ``tf32`` (TF32 matmuls/convolutions; CUDA only), ``bf16`` / ``fp16``
(autocast), ``compile`` (``torch.compile``, CUDA graphs on CUDA; the first call, which compiles,
is the warm-up and not timed).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(impl: str, size: int, reference: str | None, device: str):
    """(n_latent, run) where run(wplus) -> images for the implementation ``impl`` on ``device``."""
    from facelib.stylegan2 import StyleGAN2Generator

    G = StyleGAN2Generator(size, seed=0)  # config-f widths, random (synthetic) weights
    if impl.startswith("reference"):
        import torch.utils.cpp_extension as ext

        ext.load = lambda *a, **k: None  # the CPU path never calls the compiled module
        sys.path.insert(0, reference)
        import model as ref_model  # noqa: the reference checkout's model.py

        R = ref_model.Generator(size, 512, 8, channel_multiplier=2)
        R.load_state_dict(G.state_dict(), strict=True)
        R.eval().requires_grad_(impl != "reference").to(device)  # "reference" = as shipped: parameters require grad
        return G.n_latent, lambda w: R([w], input_is_latent=True, randomize_noise=False)[0]
    G.set_fused_modconv(impl == "facelib-fused")
    G.channels_last = False if impl == "facelib-nchw" else None  # None: NHWC on CPU, NCHW on CUDA
    G.eval().requires_grad_(False).to(device)
    return G.n_latent, G.synthesis


def _case(args: dict, queue) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    device = args["device"]
    base_rss = _rss_mb()
    n_latent, run = _build(args["impl"], args["size"], args.get("reference"), device)
    variant = args.get("variant", "fp32")
    cuda = device.startswith("cuda")
    torch.backends.cuda.matmul.allow_tf32 = variant == "tf32"
    torch.backends.cudnn.allow_tf32 = variant == "tf32"
    if variant == "compile":
        run = torch.compile(run, dynamic=False, mode="reduce-overhead" if cuda else None)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(variant)
    if amp is not None:
        plain = run

        def run(w):
            with torch.autocast(torch.device(device).type, dtype=amp):
                return plain(w).float()
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(args["batch"], n_latent, 512, generator=g).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def fwd():
        with torch.no_grad():
            run(w0)

    def fwd_bwd():
        w = w0.clone().requires_grad_(True)
        run(w).square().mean().backward()

    out = {}
    for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        fn()
        sync()
        times = []
        for _ in range(args["repeats"]):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        out[name + "_ms"] = 1000 * statistics.median(times)
        if device.startswith("cuda"):
            out[name + "_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    if not device.startswith("cuda"):
        out["peak_rss_mb"] = _rss_mb() - base_rss
    queue.put(out)


def run_case(**kw) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(kw, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return {"error": f"exit code {p.exitcode}"}
    return q.get()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--impls", nargs="+", default=["facelib", "facelib-nchw", "facelib-fused"],
                    help="facelib (split modconv, NHWC on CPU / NCHW on CUDA: the default), facelib-nchw "
                         "(split, NCHW everywhere), facelib-fused (grouped conv)")
    ap.add_argument("--reference", help="path to a local rosinality/stylegan2-pytorch checkout (CPU only)")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="speed options for the default impl: fp32 tf32 bf16 fp16 compile "
                         "(default: fp32 bf16 on CPU, all on CUDA)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import torch

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    impls = list(args.impls)
    if args.reference:
        impls += ["reference"]  # add "reference-frozen" to --impls to time it with frozen parameters too
    rows = []
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU threads" + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(f"{'device':6} {'size':>5} {'batch':>5} {'impl':17} {'variant':8} {'fwd ms':>9} {'fwd+bwd ms':>11} "
          f"{'peak MiB':>9} {'vs fp32':>8}")
    for device in devices:
        variants = args.variants or (["fp32", "bf16"] if device == "cpu" else ["fp32", "tf32", "bf16", "fp16", "compile"])
        for size in args.sizes:
            for batch in args.batches:
                for impl in impls:
                    if impl.startswith("reference") and device != "cpu":
                        continue
                    base = None
                    for variant in (variants if impl == "facelib" else ["fp32"]):
                        if variant == "tf32" and device == "cpu":
                            continue
                        r = run_case(impl=impl, size=size, batch=batch, threads=args.threads, repeats=args.repeats,
                                     device=device, reference=args.reference, variant=variant)
                        r.update(device=device, size=size, batch=batch, impl=impl, variant=variant)
                        rows.append(r)
                        if "error" in r:
                            print(f"{device:6} {size:>5} {batch:>5} {impl:17} {variant:8} {r['error']}")
                            continue
                        base = base or r
                        peak = r.get("peak_rss_mb", r.get("fwd+bwd_peak_mb", float("nan")))
                        print(f"{device:6} {size:>5} {batch:>5} {impl:17} {variant:8} {r['fwd_ms']:>9.1f} "
                              f"{r['fwd+bwd_ms']:>11.1f} {peak:>9.0f} {base['fwd+bwd_ms'] / r['fwd+bwd_ms']:>7.2f}x",
                              flush=True)
    ref = {(r["device"], r["size"], r["batch"]): r for r in rows if r["impl"] == "reference" and "error" not in r}
    for r in rows:
        key = (r["device"], r["size"], r["batch"])
        if r["impl"] == "facelib" and r["variant"] == "fp32" and key in ref and "error" not in r:
            print(f"speed-up vs reference ({key[0]}, {key[1]} px, batch {key[2]}): "
                  f"fwd {ref[key]['fwd_ms'] / r['fwd_ms']:.2f}x, fwd+bwd {ref[key]['fwd+bwd_ms'] / r['fwd+bwd_ms']:.2f}x")
    if args.json:
        from facelib._io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "dtype": "float32",
                                       "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
