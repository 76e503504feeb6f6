"""FFHQ alignment throughput on CPU: images per second for 1024 px outputs from 1-3 MP photos.

    python benchmarks/align.py                                  # 1, 2, 3 MP; 3 photos; 1024 px
    python benchmarks/align.py --mp 1 3 --repeats 5 --json out/bench_align.json
    python benchmarks/align.py --output-size 256                # smaller outputs (4x supersampled)
    python benchmarks/align.py --mp 1 --folder 12 --workers 1 2 # + align_folder photos/s, 1 and 2 workers
    python benchmarks/align.py --parity                         # + PSNR fast vs reference warp, every photo

Both warps are timed in the same run: "reference" (FFHQ's 4x supersampled warp, the only one
before the fast warp existed) and "fast" (the default; see ``facelib.align.ffhq_warp``).
``img/s`` is given for each. ``--folder N`` writes N photos at each pixel count to a temporary
folder and times ``align_folder`` end to end (decode, detect, landmarks, warp, PNG write) for
each warp and worker count; each figure is the best and the median of ``--repeats`` runs (the
CPU may be shared: the best is the least disturbed run).

The test photos in ../shared/faces are upscaled (bicubic) to each pixel count and re-encoded
as JPEG (quality 92) in memory, so every run decodes a typical camera-sized file. Stages, each
the median of ``--repeats`` runs after one warm-up:

* decode: JPEG bytes -> upright RGB (``facelib.load_image``);
* detect: dlib HOG detector, upsampled once (``facelib.align.detect_faces``), the dominant cost;
* landmarks: 68-point shape predictor on the largest box (``predict_landmarks``);
* warp: FFHQ quad, crop/pad, 4096 px bilinear transform and LANCZOS resize (``ffhq_warp``).

``img/s`` is 1 / (sum of the stages) for one face per photo. Everything runs on one thread
(dlib and Pillow do not parallelise these calls); several processes scale with the cores.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_FACES = REPO.parent / "shared" / "faces"
DEFAULT_PHOTOS = ("obama.jpg", "two_people.jpg", "biden.jpg")


def _median_time(fn, repeats: int):
    result = fn()  # warm-up (also loads and caches the dlib models)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _photo_bytes(path: Path, megapixels: float) -> tuple[bytes, tuple[int, int]]:
    from PIL import Image

    from facelib.align import load_image

    img = load_image(path)
    scale = (megapixels * 1e6 / (img.size[0] * img.size[1])) ** 0.5
    size = (round(img.size[0] * scale), round(img.size[1] * scale))
    img = img.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue(), size


def run(photos: list[Path], mps: list[float], output_size: int, repeats: int,
        transform_size: int | None = None) -> list[dict]:
    from PIL import Image

    from facelib.align import detect_faces, ffhq_quad, ffhq_warp, load_image, predict_landmarks

    rows = []
    for mp in mps:
        for path in photos:
            data, size = _photo_bytes(path, mp)
            t_decode, rgb = _median_time(lambda: load_image(Image.open(io.BytesIO(data))), repeats)
            t_detect, boxes = _median_time(lambda: detect_faces(rgb), repeats)
            if not boxes:
                print(f"  {path.name} at {mp} MP: no face found, skipped")
                continue
            t_lm, lm = _median_time(lambda: predict_landmarks(rgb, boxes[0]), repeats)

            def warp():
                quad, qsize = ffhq_quad(lm)
                return ffhq_warp(rgb, quad, qsize, output_size=output_size, transform_size=transform_size)

            t_warp, out = _median_time(warp, repeats)
            assert out.size == (output_size, output_size)

            def warp_fast():
                quad, qsize = ffhq_quad(lm)
                return ffhq_warp(rgb, quad, qsize, output_size=output_size, warp="fast")

            t_fast, _ = _median_time(warp_fast, repeats)
            total = t_decode + t_detect + t_lm + t_warp
            total_fast = total - t_warp + t_fast
            rows.append({"photo": path.name, "megapixels": mp, "width": size[0], "height": size[1],
                         "faces": len(boxes), "decode_s": t_decode, "detect_s": t_detect,
                         "landmarks_s": t_lm, "warp_s": t_warp, "total_s": total,
                         "images_per_s": 1.0 / total, "warp_fast_s": t_fast, "total_fast_s": total_fast,
                         "images_per_s_fast": 1.0 / total_fast})
            r = rows[-1]
            print(f"{r['photo']:<16}{mp:>4.1f} {size[0]:>5}x{size[1]:<5}{t_decode * 1e3:>8.0f}"
                  f"{t_detect * 1e3:>8.0f}{t_lm * 1e3:>8.1f}{t_warp * 1e3:>8.0f}{total * 1e3:>8.0f}"
                  f"{1.0 / total:>7.2f}{t_fast * 1e3:>8.0f}{1.0 / total_fast:>7.2f}", flush=True)
    return rows


def run_folder(photos: list[Path], mps: list[float], n: int, output_size: int, workers: list[int],
               repeats: int) -> list[dict]:
    """align_folder photos/s on ``n`` photos per pixel count, by warp and worker count (best, median)."""
    import tempfile

    from facelib.align_batch import align_folder

    rows = []
    for mp in mps:
        with tempfile.TemporaryDirectory(prefix="facelib-bench-align-") as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            for k in range(n):
                data, _ = _photo_bytes(photos[k % len(photos)], mp)
                (src / f"{k:04d}.jpg").write_bytes(data)
            for warp in ("reference", "fast"):
                for w in workers:
                    times = []
                    for rep in range(repeats):
                        dst = Path(tmp) / f"out-{warp}-{w}-{rep}"
                        t = time.perf_counter()
                        res = align_folder(src, dst, output_size=output_size, workers=w, warp=warp, progress=False)
                        times.append(time.perf_counter() - t)
                        assert len(res.written) == n, res.summary()
                    best, med = n / min(times), n / statistics.median(times)
                    rows.append({"megapixels": mp, "photos": n, "warp": warp, "workers": w,
                                 "photos_per_s_best": best, "photos_per_s_median": med, "seconds": times})
                    print(f"  {mp:.1f} MP  {warp:<9} {w} worker(s): {best:6.2f} photos/s best, {med:6.2f} median "
                          f"({repeats} runs of {n} photos)", flush=True)
    return rows


def run_parity(faces: Path, sizes: list[int]) -> list[dict]:
    """PSNR (dB) of the fast warp against the reference warp for every photo with a face in ``faces``."""
    import numpy as np

    from facelib.align import IMAGE_EXTENSIONS, detect_faces, ffhq_quad, ffhq_warp, load_image, predict_landmarks

    rows = []
    for path in sorted(p for p in faces.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        rgb = load_image(path)
        boxes = detect_faces(rgb)
        if not boxes:
            continue
        quad, qsize = ffhq_quad(predict_landmarks(rgb, boxes[0]))
        row = {"photo": path.name}
        for size in sizes:
            a = np.asarray(ffhq_warp(rgb, quad, qsize, output_size=size), dtype=np.float64)
            b = np.asarray(ffhq_warp(rgb, quad, qsize, output_size=size, warp="fast"), dtype=np.float64)
            mse = float(np.mean((a - b) ** 2))
            row[str(size)] = 100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0 ** 2 / mse))
        rows.append(row)
        print(f"  {path.name:<24}" + "".join(f"{size:>6} px {row[str(size)]:6.2f} dB" for size in sizes), flush=True)
    return rows


def _environment(output_size: int, transform_size: int, repeats: int) -> dict:
    import dlib
    import numpy
    import PIL
    import scipy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"device": "cpu", "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "dlib": dlib.__version__, "pillow": PIL.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "output_size": output_size, "transform_size": transform_size,
            "repeats": repeats, "dtype": "uint8 / float32 (padding)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder with the test photos")
    ap.add_argument("--photos", nargs="+", default=list(DEFAULT_PHOTOS))
    ap.add_argument("--mp", nargs="+", type=float, default=[1.0, 2.0, 3.0], help="megapixels")
    ap.add_argument("--output-size", type=int, default=1024)
    ap.add_argument("--transform-size", type=int, default=None,
                    help="warp size; default 4 x output (FFHQ); 2 x output is ~3x faster at >= 55 dB parity")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folder", type=int, default=0, help="also time align_folder on this many photos per MP")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for --folder")
    ap.add_argument("--parity", action="store_true", help="also print PSNR of the fast warp vs the reference")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    photos = [args.faces / p for p in args.photos]
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        print(f"missing photos: {', '.join(missing)} (pass --faces)", file=sys.stderr)
        return 1
    transform = args.transform_size or 4 * args.output_size
    env = _environment(args.output_size, transform, args.repeats)
    print(f"FFHQ alignment, {args.output_size} px output (warp {transform} px), "
          f"CPU: {env['cpu']} ({env['cpu_count']} cores), median of {args.repeats}; times in ms")
    print(f"{'photo':<16}{'MP':>4} {'size':<11}{'decode':>8}{'detect':>8}{'lmarks':>8}{'warp':>8}"
          f"{'total':>8}{'img/s':>7}{'fast':>8}{'img/s':>7}")
    print(f"{'':<52}{'(reference warp)':>23}{'(fast warp)':>15}")
    rows = run(photos, args.mp, args.output_size, args.repeats, args.transform_size)
    if not rows:
        return 1
    summary = {}
    for mp in args.mp:
        sel = [r for r in rows if r["megapixels"] == mp]
        if sel:
            summary[str(mp)] = {
                "images_per_s": len(sel) / sum(r["total_s"] for r in sel),
                "images_per_s_fast": len(sel) / sum(r["total_fast_s"] for r in sel),
                "detect_s": statistics.mean(r["detect_s"] + r["landmarks_s"] for r in sel),
                "warp_s": statistics.mean(r["warp_s"] for r in sel),
                "warp_fast_s": statistics.mean(r["warp_fast_s"] for r in sel),
            }
            s = summary[str(mp)]
            print(f"{mp:.1f} MP, one core: reference {s['images_per_s']:.2f} img/s, fast {s['images_per_s_fast']:.2f} "
                  f"img/s  (detect+landmarks {s['detect_s'] * 1e3:.0f} ms, warp {s['warp_s'] * 1e3:.0f} ms -> "
                  f"{s['warp_fast_s'] * 1e3:.0f} ms per photo)")
    folder = []
    if args.folder:
        print(f"align_folder, {args.output_size} px, {args.folder} photos per MP:")
        folder = run_folder(photos, args.mp, args.folder, args.output_size, args.workers, args.repeats)
    parity = []
    if args.parity:
        print("PSNR of the fast warp against the reference warp:")
        parity = run_parity(args.faces, [1024, 256, 64])
    if args.json:
        from facelib._io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"environment": env, "rows": rows, "summary": summary, "folder": folder,
                                       "parity": parity}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
