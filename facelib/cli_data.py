"""Command line, the data and pipeline sub-commands: ``demo``, ``report``, ``data``, ``sample``,
``align``, ``project``, ``convert``.

Each command is one ``_add_<name>`` function that registers its sub-parser and sets ``func``;
:data:`COMMANDS` lists them in help order (:mod:`facelib.cli` puts them on the parser).
Heavy modules are imported inside the handlers so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import logging
from typing import Callable

from .cli_common import (DEVICE_HELP, MAX_SAMPLES, check_counts, check_finite, device_option, given_options,
                         is_smoke, open_generator, refuse_existing)
from .errors import InputError

__all__ = ["COMMANDS"]

log = logging.getLogger(__name__)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="render a grid of random samples from a generator")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration")
    p.add_argument("--n", type=int, default=8, help="number of samples (1-256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists (kept otherwise)")
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from .stamps import SMOKE_STAMP
    from .grids import make_grid, save_image, stamp

    from ._io import check_output_file

    if not 1 <= args.n <= MAX_SAMPLES:
        raise InputError(f"--n: expected 1 .. {MAX_SAMPLES} samples, got {args.n}")
    check_finite(args, ["truncation"])
    check_output_file(args.out, "OUT")
    refuse_existing(args.out, "OUT", args.overwrite)
    G = open_generator(args.weights, seed=args.seed)
    images = G.sample(args.n, seed=args.seed, truncation=args.truncation)
    cols = min(args.n, 4)
    grid = make_grid([list(images[i:i + cols]) for i in range(0, args.n, cols)], cell=min(256, G.resolution * 2))
    save_image(stamp(grid, SMOKE_STAMP) if is_smoke(G) else grid, args.out)
    print(f"wrote {args.out} ({args.n} samples, {G.resolution} px)")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: run the notebooks headlessly, then build out/report.html",
                       description="Executes notebooks/0*.ipynb in order with papermill into OUT/notebooks/ and "
                                   "builds OUT/report.md and OUT/report.html. With a StyleGAN2 generator found "
                                   "(python -m facelib data status) it is a real run; without one, a smoke run "
                                   "with a small untrained generator whose images are all stamped as such.")
    p.add_argument("--out", default="out", help="results folder (default: out)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="force the smoke run even when weights are found")
    mode.add_argument("--full", action="store_true", help="require a real generator (error when none is found)")
    p.add_argument("--weights", help="generator file (default: the first one found)")
    p.add_argument("--steps", type=int, help="optimisation steps (default: 25 in a smoke run, else the notebooks')")
    p.add_argument("--only", help="comma-separated steps to run, e.g. 01,02 (the report still covers all)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra notebook parameter (a Python literal), e.g. -p INPUT_DIR='\"photos\"'")
    p.add_argument("--kernel", help="Jupyter kernel name (default: python3 when it runs this Python)")
    p.add_argument("--log-output", action="store_true", help="print everything the notebooks print")
    p.add_argument("--no-progress", action="store_true", help="no live status line")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report (same as `report`)")
    p.set_defaults(func=_run_demo)


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def _run_demo(args: argparse.Namespace) -> int:
    if args.report_only:
        return _run_report(argparse.Namespace(out=args.out))
    from .pipeline import run_series

    check_counts(args, ["steps"])

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise InputError(f"--param: expected NAME=VALUE, got {item!r}")
        params[name] = _literal(value)
    result = run_series(args.out, smoke=True if args.smoke else False if args.full else None, steps=args.steps,
                        weights=args.weights, device=args.device, seed=args.seed,
                        only=args.only.split(",") if args.only else None, parameters=params,
                        kernel_name=args.kernel, progress=not args.no_progress, log_output=args.log_output)
    return 0 if result.ok else 1


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build out/report.md and out/report.html from what is in out/ (runs nothing)")
    p.add_argument("--out", default="out", help="results folder (default: out)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from .report import build_report

    print(build_report(args.out).summary())
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="find inputs (status), fetch the Kaggle datasets (download), check them (verify)",
                       description="Weight files are recognised by their content. Searched: $FACELIB_DATA, "
                                   "/kaggle/input/*, ./data and the face_recognition_models package.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    st = dsub.add_parser("status", help="print what was found where")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_run_data_status)
    dl = dsub.add_parser("download", help="fetch the report's Kaggle datasets into data/ (needs Kaggle credentials)")
    dl.add_argument("--dest", default="data", help="data folder (default: data)")
    dl.add_argument("--dataset", action="append", help="owner/slug (repeatable; default: the five report datasets)")
    dl.add_argument("--force", action="store_true", help="download again even when a verified copy exists")
    dl.set_defaults(func=_run_data_download)
    vf = dsub.add_parser("verify", help="check data/ against the sizes and SHA-256 in data/MANIFEST.json")
    vf.add_argument("--dest", default="data")
    vf.add_argument("--quick", action="store_true", help="sizes only (no hashing)")
    vf.set_defaults(func=_run_data_verify)
    p.set_defaults(func=_run_data_status, json=False)


def _run_data_status(args: argparse.Namespace) -> int:
    import json

    from .data import locate
    from .kaggle import verify_manifest

    inv = locate()
    if getattr(args, "json", False):
        print(json.dumps(inv.to_dict(), indent=2))
        return 0
    print(inv.summary())
    bad = verify_manifest("data")
    if bad:
        print("data/MANIFEST.json mismatches:")
        for pr in bad:
            print(f"  {pr.path}: {pr.problem}")
    if not inv.generators:
        print("\nno StyleGAN2 generator: `python -m facelib demo` will do the labelled smoke run.")
    return 0


def _run_data_download(args: argparse.Namespace) -> int:
    from .kaggle import download, KAGGLE_DATASETS

    results = download(args.dest, args.dataset or KAGGLE_DATASETS, force=args.force, on_progress=print)
    bad = [r for r in results if r.status == "failed" or r.problems]
    if bad:
        print(f"{len(bad)} dataset(s) with problems; see above")
    return 1 if bad else 0


def _run_data_verify(args: argparse.Namespace) -> int:
    from .kaggle import verify_manifest

    problems = verify_manifest(args.dest, hashes=not args.quick)
    for pr in problems:
        print(f"{pr.path}: {pr.problem}")
    print("all files match the manifest" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="FFHQ-align every photo in a folder (dlib landmarks)",
                       description="Writes <DST>/<person>/<n>.jpg for the largest face of each photo (the "
                                   "layout notebooks and the report read; person = first sub-folder, else "
                                   "the file stem), or <n>_<k>.jpg for every face (k = 0 is the largest) with "
                                   "--all-faces; --layout mirror writes <DST>/<sub>/<stem>.png instead. Photos "
                                   "whose output exists are skipped; outputs of another size are kept unless "
                                   "--overwrite.")
    p.add_argument("src", help="folder of photos (searched recursively) or one photo")
    p.add_argument("dst", help="output folder")
    p.add_argument("--size", type=int, default=1024, help="output side in pixels, 16-4096 (FFHQ: 1024)")
    p.add_argument("--layout", choices=["person", "mirror"], default="person",
                   help="person (default): <person>/<n>.jpg; mirror: the input tree as <sub>/<stem>.png")
    p.add_argument("--all-faces", action="store_true", help="write every face, not only the largest")
    p.add_argument("--detector", choices=["hog", "cnn", "auto"], default="hog",
                   help="dlib detector; auto = HOG, then CNN when HOG finds nothing")
    p.add_argument("--predictor", help="shape_predictor_68_face_landmarks.dat (file or folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo photos whose outputs exist, also those made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes (default: one per CPU core, at most one per 4 photos; 1 = in this process). "
                        "Under torchrun each rank aligns its share of the photos")
    p.add_argument("--warp", choices=["fast", "reference"], default="fast",
                   help="fast (default): one antialiased resampling, >= 40 dB of the reference; "
                        "reference: FFHQ's 4x supersampled warp, bit-exact")
    p.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    from .align_batch import MAX_OUTPUT_SIZE, align_folder
    from .distributed import finish, init

    if not 16 <= args.size <= MAX_OUTPUT_SIZE:
        raise InputError(f"--size: expected 16 .. {MAX_OUTPUT_SIZE} px, got {args.size}")
    if args.workers < 0:
        raise InputError(f"--workers: expected 0 (automatic) or more, got {args.workers}")
    info = init("cpu")  # alignment runs on CPU cores; under torchrun the ranks share the photos (gloo)
    try:
        result = align_folder(args.src, args.dst, output_size=args.size, all_faces=args.all_faces,
                              detector=args.detector, predictor_path=args.predictor,
                              overwrite=args.overwrite, layout=args.layout, progress=not args.quiet,
                              workers=args.workers or None, warp=args.warp)
    finally:
        finish()
    if info.rank == 0:
        print(result.summary())
    return 0 if result.ok else 1


def _add_project(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="project aligned face images into W+",
                       description="Writes <OUT_DIR>/<sub>/<stem>.pt (tensors: wplus, noise maps, image), "
                                   "<stem>.json (settings, metrics, loss history) and <stem>.png (the "
                                   "projection) for every image under ALIGNED_DIR. Images already done are "
                                   "skipped; unreadable images are reported and the rest go on.")
    p.add_argument("aligned_dir", help="folder of aligned images (searched recursively) or one image")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--weights", help="generator checkpoint; default: the first one `data status` finds, else "
                                     "the small untrained configuration (a smoke run, stamped)")
    # projection settings default to facelib.ProjectConfig's (None = not given)
    p.add_argument("--steps", type=int, help="optimisation steps (default 1000)")
    p.add_argument("--lr", type=float, help="base learning rate (default 0.1)")
    p.add_argument("--scheduler", choices=["rampupdown", "exp", "cosine", "constant"],
                   help="learning-rate schedule (default rampupdown)")
    p.add_argument("--gamma", type=float, help="decay per step for --scheduler exp (default: to 10%% at the end)")
    p.add_argument("--lpips", choices=["auto", "vgg", "none"],
                   help="auto (default): use LPIPS when VGG16 weights are found locally; vgg: require them")
    p.add_argument("--vgg-path", help="torchvision vgg16-397923af.pth (file or folder)")
    p.add_argument("--lpips-weight", type=float)
    p.add_argument("--mse-weight", type=float)
    p.add_argument("--noise-reg-weight", type=float)
    p.add_argument("--seed", type=int, help="base seed; each image uses seed + a hash of its path (default 0)")
    p.add_argument("--batch-size", type=int,
                   help="images optimised together (default: up to 4, as many as the free memory holds)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--cache-dir", help="reuse finished projections of identical images and settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results made with other settings or another generator (kept otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--init-encoder", "--encoder", dest="init_encoder", metavar="FILE",
                   help="pSp/e4e encoder checkpoint (psp_ffhq_encode.pt, e4e_ffhq_encode.pt): start from its W+ "
                        "(a few hundred steps, or --steps 0, replace a thousand); without --weights its decoder "
                        "is the generator")
    _add_tune_options(p)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default); bf16: autocast (Ampere+ GPUs, CPUs); fp16: autocast with loss scaling (T4, P100)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the generator step (CUDA graphs on GPUs); pays off on long runs")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", default=None,
                   help="keep matmuls/convolutions in full fp32 on Ampere+ GPUs")
    p.set_defaults(func=_run_project)


def _add_tune_options(p: argparse.ArgumentParser) -> None:
    """--tune and its settings (pivotal tuning after projection)."""
    p.add_argument("--tune", action="store_true",
                   help="after projecting, tune a copy of the generator per photo (pivotal tuning); writes "
                        "<stem>.tune.pt (the weight difference) + <stem>.tune.json beside each latent")
    p.add_argument("--tune-steps", type=int, help="tuning steps (default 350, PTI)")
    p.add_argument("--tune-lr", type=float, help="tuning learning rate (default 3e-4, PTI)")


def _run_project(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._io import check_output_folder
    from .distributed import finish, init
    from .projection_folder import project_folder

    # --steps 0 is meaningful only from an encoder's W+ (the encoder's inversion as it is)
    check_counts(args, ["batch_size"] if args.init_encoder and args.steps == 0 else ["steps", "batch_size"])
    check_finite(args, ["lr", "gamma", "lpips_weight", "mse_weight", "noise_reg_weight"])
    check_output_folder(args.out_dir, "OUT_DIR")
    if not Path(args.aligned_dir).exists():
        raise InputError(f"ALIGNED_DIR {args.aligned_dir}: no such folder or image")
    device_option(args.device)  # a device that does not exist here: one clear line before anything starts
    info = init(args.device)  # under torchrun: join the group, this rank's device (cuda:LOCAL_RANK or CPU)
    try:
        device = device_option(str(info.device))
        options = given_options(args, ("steps", "lr", "scheduler", "gamma", "lpips", "lpips_weight", "mse_weight",
                                "noise_reg_weight", "seed", "precision", "compile", "tf32"))
        encoder = None
        if args.init_encoder:
            from .encoders import load_encoder

            encoder = load_encoder(args.init_encoder, device=device, decoder=not args.weights)
            options["init"] = encoder
        G = encoder.decoder if encoder is not None and encoder.decoder is not None else open_generator(args.weights,
                                                                                                     device)
        result = project_folder(args.aligned_dir, args.out_dir, G, batch_size=args.batch_size,
                                overwrite=args.overwrite, progress=not args.quiet, cache_dir=args.cache_dir,
                                vgg_path=args.vgg_path, **options)
    finally:
        finish()
    if info.rank != 0:  # rank 0 prints the combined summary of every rank (and tunes)
        return 0 if result.ok else 1
    print(result.summary())
    if info.distributed:
        print(f"(all {info.world_size} processes; each result's JSON names its rank)")
    if args.tune:
        from .tuning import tune_folder

        tune_opts = {k: v for k, v in (("steps", args.tune_steps), ("lr", args.tune_lr),
                                       ("lpips", args.lpips)) if v is not None}
        tuned = tune_folder(args.aligned_dir, args.out_dir, G, overwrite=args.overwrite, progress=not args.quiet,
                            vgg_path=args.vgg_path, **tune_opts)
        print(tuned.summary())
        return 0 if result.ok and tuned.ok else 1
    return 0 if result.ok else 1


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a generator (NVIDIA .pkl or .pt) to a rosinality-layout .pt, "
                                       "verified before writing")
    p.add_argument("src", metavar="IN", help="NVIDIA stylegan2-ada-pytorch network pickle or a .pt checkpoint")
    p.add_argument("dst", metavar="OUT", help="output .pt {'g_ema', 'latent_avg'}")
    p.add_argument("--check-images", type=int, default=3, help="images compared before writing (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed W+ codes used for the check")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists (kept otherwise)")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .nvidia_convert import convert_checkpoint

    refuse_existing(args.dst, "OUT", args.overwrite)
    r = convert_checkpoint(args.src, args.dst, n_check=args.check_images, seed=args.seed)
    clamp = "" if r.conv_clamp is None else f", conv_clamp {r.conv_clamp:g}"
    print(f"wrote {r.dst} ({r.source_format} -> rosinality .pt, {r.resolution} px, n_latent {r.n_latent}{clamp})")
    print(f"verified on {r.n_images} images from fixed W+ (noise=None): max abs diff {r.max_abs_err:.3e} "
          f"(mapping {r.mapping_err:.3e})")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_report,
    _add_data,
    _add_sample,
    _add_align,
    _add_project,
    _add_convert,
]
