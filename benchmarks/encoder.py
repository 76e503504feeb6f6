"""pSp / e4e encoder speed and memory: loading a checkpoint, and W+ for aligned 256 px faces.

    python benchmarks/encoder.py                              # e4e, batch 1 and 4, CPU (+ CUDA if present)
    python benchmarks/encoder.py --kind psp --batches 1 --threads 2 --json benchmarks/results/enc_cpu.json

Weights are random in the released layout (24 IR-SE units, 18 map2style heads, 267 M values,
about 1.07 GB in float32; the values do not change the cost). The checkpoint is written
without a decoder, so "load" is reading the file safely (``weights_only``), hashing it and
assigning the tensors. Forward figures are the median of ``--repeats`` runs after one warm-up;
peak memory is the process's peak RSS growth (CPU) or ``max_memory_allocated`` (CUDA).
"""
from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["psp", "e4e"], default="e4e")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import torch

    from facelib.encoders import ENCODER_TYPES, EncoderSpec, StyleEncoder, load_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    etype = {v: k for k, v in ENCODER_TYPES.items()}[args.kind]
    rss0 = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.kind}.pt"
        net = StyleEncoder(EncoderSpec(args.kind))
        torch.manual_seed(0)
        torch.save({"state_dict": {"encoder." + k: v for k, v in net.state_dict().items()},
                    "opts": {"encoder_type": etype, "start_from_latent_avg": True},
                    "latent_avg": torch.randn(18, 512)}, path)
        size_mb = path.stat().st_size / 2 ** 20
        del net
        t0 = time.perf_counter()
        enc = load_encoder(path, decoder=False)
        load_s = time.perf_counter() - t0
    results = {"kind": args.kind, "file_mb": round(size_mb, 1), "load_s": round(load_s, 2),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
               "processor": platform.processor(), "cases": []}
    print(f"{args.kind}: checkpoint {size_mb:.0f} MB, load_encoder {load_s:.2f} s "
          f"({torch.get_num_threads()} CPU threads)")
    for device in devices:
        enc = enc.to(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for b in args.batches:
            x = torch.rand(b, 3, 256, 256, generator=torch.Generator().manual_seed(b)).mul(2).sub(1).to(device)
            times = []
            with torch.no_grad():
                for r in range(args.repeats + 1):
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    enc(x)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    if r:
                        times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda")
                    else _rss_mb() - rss0)
            results["cases"].append({"device": device, "batch": b, "seconds": round(med, 4),
                                     "ms_per_image": round(1000 * med / b, 1), "peak_mb": round(peak)})
            print(f"  {device:5s} batch {b}: {med:.3f} s ({1000 * med / b:.0f} ms/image), peak {peak:.0f} MB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
