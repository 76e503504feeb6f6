"""Command line: ``python -m facelib <command> ...``.

Thin wrappers over the library functions. Each command is one ``_add_<name>`` function that
registers its sub-parser and sets ``func``; :data:`_COMMANDS` lists them in help order.
Heavy modules are imported inside the handlers so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from .errors import FacelibError, InputError

__all__ = ["main"]

log = logging.getLogger(__name__)

_DEVICE_HELP = "auto, cpu, cuda, cuda:1, mps"
_MAX_SAMPLES = 256  # one grid image; more would only exhaust memory


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The options among ``names`` that were given (None = not given: the config's default applies)."""
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if options.get("lpips") == "none":
        options["lpips"] = None
    return options


def _generator(weights: str | None, device=None, *, seed: int = 0):
    """The generator in ``weights``; without it the first one :func:`facelib.data.locate` finds (as
    ``demo`` does); without any, the small untrained generator of smoke runs (its images are stamped)."""
    from .data import locate
    from .stamps import REAL_WEIGHTS_HELP
    from .session import smoke_generator
    from .weights import load_generator

    if not weights:
        found = locate().first("generator")
        if found is not None:
            log.info("generator: %s (found by `python -m facelib data status`; --weights picks another)", found.path)
            weights = str(found.path)
    if weights:
        return load_generator(weights, device=device)
    log.warning("no --weights and no generator found: using the small UNTRAINED generator (a smoke run; "
                "its images are stamped and are not faces); `python -m facelib data status` says where to put one")
    log.debug("%s", REAL_WEIGHTS_HELP)
    return smoke_generator(seed, device)


def _check_counts(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Integer options that must be >= 1 when given (``--steps 0`` would optimise nothing)."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {v}")


def _check_finite(args: argparse.Namespace, names: Sequence[str]) -> None:
    import math

    for name in names:
        v = getattr(args, name, None)
        if v is not None and not math.isfinite(v):
            raise InputError(f"--{name.replace('_', '-')}: expected a finite number, got {v}")


def _device(text: str):
    from .weights import resolve_device

    return resolve_device(text, name="--device")


def _mask(spec: str, n_latent: int, option: str):
    """``--rows`` / ``--mask`` text -> LayerMask. Rows are written in the report's 18-row (1024 px)
    terms and carried over to the generator's rows by :meth:`facelib.edits.LayerMask.scaled`, as
    the notebooks do; an empty or malformed mask is an error naming the option."""
    from .edits import LayerMask

    try:
        mask = LayerMask.scaled(spec, n_latent)
    except FacelibError as e:
        raise InputError(f"{option}: {e} (rows are given in 18-row terms, 0-17)") from None
    if not any(w > 0 for w in mask.weights):
        raise InputError(f"{option} {spec!r}: selects no W+ row, so the edit would change nothing; "
                         "give rows such as '1-17' or a preset")
    return mask


def _kept_or_done(out, meta_path, same: dict, overwrite: bool) -> int | None:
    """For single-output commands: None = go on; 0 = the same result exists (done); 1 = a result of
    other settings exists and is kept (without --overwrite)."""
    import json
    from pathlib import Path

    out = Path(out)
    if overwrite or not (out.exists() or Path(meta_path).exists()):
        return None
    try:
        saved = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError):
        saved = {}
    diff = [k for k, v in same.items() if saved.get(k) != v]
    if out.exists() and not diff:
        print(f"{out}: already done with these settings (--overwrite redoes it)")
        return 0
    shown = ", ".join(f"{k} {saved.get(k)!r} (now {same[k]!r})" for k in diff[:3]) or "incomplete"
    print(f"kept {out}: made with other settings ({shown}); rerun with --overwrite to replace it")
    return 1


def _is_smoke(G) -> bool:
    """True for the untrained smoke generator (its fingerprint is marked so), whose images must be stamped."""
    return str(getattr(G, "weights_sha256", "")).startswith("smoke-")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="render a grid of random samples from a generator")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration")
    p.add_argument("--n", type=int, default=8, help="number of samples (1-256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from .stamps import SMOKE_STAMP
    from .grids import make_grid, save_image, stamp

    from ._io import check_output_file

    if not 1 <= args.n <= _MAX_SAMPLES:
        raise InputError(f"--n: expected 1 .. {_MAX_SAMPLES} samples, got {args.n}")
    _check_finite(args, ["truncation"])
    check_output_file(args.out, "OUT")
    G = _generator(args.weights, seed=args.seed)
    images = G.sample(args.n, seed=args.seed, truncation=args.truncation)
    cols = min(args.n, 4)
    grid = make_grid([list(images[i:i + cols]) for i in range(0, args.n, cols)], cell=min(256, G.resolution * 2))
    save_image(stamp(grid, SMOKE_STAMP) if _is_smoke(G) else grid, args.out)
    print(f"wrote {args.out} ({args.n} samples, {G.resolution} px)")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: run the five notebooks headlessly, then build out/report.html",
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

    _check_counts(args, ["steps"])

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
    from .kaggle import KAGGLE_DATASETS, download

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
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
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
    from .project import project_folder

    # --steps 0 is meaningful only from an encoder's W+ (the encoder's inversion as it is)
    _check_counts(args, ["batch_size"] if args.init_encoder and args.steps == 0 else ["steps", "batch_size"])
    _check_finite(args, ["lr", "gamma", "lpips_weight", "mse_weight", "noise_reg_weight"])
    check_output_folder(args.out_dir, "OUT_DIR")
    if not Path(args.aligned_dir).exists():
        raise InputError(f"ALIGNED_DIR {args.aligned_dir}: no such folder or image")
    _device(args.device)  # a device that does not exist here: one clear line before anything starts
    info = init(args.device)  # under torchrun: join the group, this rank's device (cuda:LOCAL_RANK or CPU)
    try:
        device = _device(str(info.device))
        options = _given(args, ("steps", "lr", "scheduler", "gamma", "lpips", "lpips_weight", "mse_weight",
                                "noise_reg_weight", "seed", "precision", "compile", "tf32"))
        encoder = None
        if args.init_encoder:
            from .encoders import load_encoder

            encoder = load_encoder(args.init_encoder, device=device, decoder=not args.weights)
            options["init"] = encoder
        G = encoder.decoder if encoder is not None and encoder.decoder is not None else _generator(args.weights,
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
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .nvidia_convert import convert_checkpoint

    r = convert_checkpoint(args.src, args.dst, n_check=args.check_images, seed=args.seed)
    clamp = "" if r.conv_clamp is None else f", conv_clamp {r.conv_clamp:g}"
    print(f"wrote {r.dst} ({r.source_format} -> rosinality .pt, {r.resolution} px, n_latent {r.n_latent}{clamp})")
    print(f"verified on {r.n_images} images from fixed W+ (noise=None): max abs diff {r.max_abs_err:.3e} "
          f"(mapping {r.mapping_err:.3e})")
    return 0


def _add_mix(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mix", help="style mixing: take W+ rows of STYLE into CONTENT and render",
                       description="Reads two saved projections (or .pt files holding {'wplus': tensor} or a "
                                   "tensor), replaces the --rows of CONTENT by STYLE's (interpolates with "
                                   "--strength < 1), writes OUT (the rendering; a row of images for a batch) "
                                   "and OUT with suffix .pt (the mixed W+, chainable) plus <OUT>.edit.json.")
    p.add_argument("content", help="content latents (.pt)")
    p.add_argument("style", help="style latents (.pt); a batch of 1 applies to every content")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--rows", default="style",
                   help="rows taken from STYLE, in the report's 18-row (1024 px) terms, scaled to smaller "
                        "generators as the notebooks do: '9-17', '0,2,4-6' or a preset (coarse, middle, fine, "
                        "style); default 'style' = 9-17")
    _add_latent_edit_options(p, strength_help="1 replaces the rows, 0..1 interpolates")
    p.set_defaults(func=_run_mix)


def _add_latent_edit_options(p: argparse.ArgumentParser, *, strength_help: str) -> None:
    """--strength, --weights and --device of the commands that edit saved latents."""
    p.add_argument("--strength", type=float, default=1.0, help=strength_help)
    p.add_argument("--weights", help="generator checkpoint; default: the one recorded with the latents")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it was made with other settings")
    _add_tuning_and_paste_options(p)


def _add_tuning_and_paste_options(p: argparse.ArgumentParser) -> None:
    """--tuning / --no-tuning and --paste-back of the edit commands."""
    p.add_argument("--tuning", help="render through this pivotal tuning (.tune.pt from project --tune); default: "
                                    "the <stem>.tune.pt beside the edited latent when there is one")
    p.add_argument("--no-tuning", action="store_true", help="render through the plain generator")
    p.add_argument("--paste-back", metavar="ALIGNED",
                   help="also paste the result into the original photo: ALIGNED is the aligned crop the edited "
                        "latent was projected from (its <stem>.align.json names the photo); writes "
                        "<OUT stem>.photo<ext>")


def _tuned_generator(args: argparse.Namespace, G, latent_path: str):
    """(generator to render with, tuning file or None): --tuning, else the one beside the latent.

    Also checks --paste-back's alignment and photo first, so a bad one fails before any output is written.
    """
    from pathlib import Path

    from .tuning import load_tuning, tuning_path

    if getattr(args, "paste_back", None):  # fail before writing anything when the photo cannot be found
        from .align_batch import load_alignment

        face = load_alignment(args.paste_back)
        if not face.source or not Path(face.source).is_file():
            from .errors import InputError

            raise InputError(f"--paste-back {args.paste_back}: its photo {face.source!r} was not found")
    if getattr(args, "no_tuning", False):
        return G, None
    path = Path(args.tuning) if getattr(args, "tuning", None) else tuning_path(latent_path)
    if not args.tuning and not path.is_file():
        return G, None
    tuning = load_tuning(path, G)
    print(f"rendering through the tuned generator {path}")
    return tuning.generators[0], str(path)


def _paste_back(args: argparse.Namespace, G, image, out: str) -> None:
    """With --paste-back, write <OUT stem>.photo<ext>: the edited face in the original photo."""
    if not getattr(args, "paste_back", None):
        return
    from pathlib import Path

    from .stamps import SMOKE_STAMP
    from .errors import InputError
    from .paste import paste_file

    if image.ndim == 4 and image.shape[0] != 1:
        raise InputError(f"--paste-back: the edit made {image.shape[0]} images; paste back one at a time")
    o = Path(out)
    dst = paste_file(image, args.paste_back, o.with_name(f"{o.stem}.photo{o.suffix}"),
                     stamp_text=SMOKE_STAMP if _is_smoke(G) else None)
    print(f"wrote {dst} (the edit pasted into the photo)")


def _latents_and_generator(paths: Sequence[str], weights: str | None, device: str):
    """Read saved latents and the generator they belong to (:func:`facelib.edits.generator_for`).

    Returns:
        (list of SavedLatents, generator, where the generator came from).
    Raises:
        ShapeError: a file's W+ rows do not fit the generator (the message names the file).
    """
    from .edits import generator_for, load_latents
    from .errors import ShapeError
    from .weights import resolve_device

    latents = [load_latents(p) for p in paths]
    G, source = generator_for(latents, weights, device=resolve_device(device, name="--device"))
    want = (G.n_latent, G.style_dim)
    for lat in latents:
        if tuple(lat.wplus.shape[1:]) != want:
            raise ShapeError(f"{lat.path}: W+ {tuple(lat.wplus.shape[1:])} does not fit the generator {want}; "
                             "pass the --weights it was projected with",
                             actual_shape=lat.wplus.shape, expected_shape=(None, *want))
        if lat.noises is not None:
            sides = [int(b.shape[-1]) for b in G.noise_buffers]
            got = [int(nz.shape[-1]) for nz in lat.noises]
            if got != sides:
                raise ShapeError(f"{lat.path}: {len(got)} noise maps of sides {got} do not fit the generator's "
                                 f"{len(sides)} maps {sides}; pass the --weights it was projected with")
    return latents, G, source


def _write_edit(G, source: str, wplus, noises, out: str, *, render_G=None, paste: argparse.Namespace | None = None,
                **meta) -> None:
    from pathlib import Path

    from .stamps import SMOKE_STAMP
    from .edits import render, save_latents
    from .grids import make_grid, save_image, stamp, to_pil

    images = render(render_G if render_G is not None else G, wplus, noise=noises)
    image = to_pil(images[0]) if images.shape[0] == 1 else make_grid([list(images)], cell=G.resolution)
    if _is_smoke(G):
        image = stamp(image, SMOKE_STAMP)
    save_image(image, out)
    pt = Path(out).with_suffix(".pt")
    save_latents(pt, wplus, noises=noises, weights_sha256=getattr(G, "weights_sha256", None),
                 weights_path=getattr(G, "source_path", None), **meta)
    print(f"wrote {out} and {pt} ({images.shape[0]} image(s), {source})")
    if paste is not None:
        _paste_back(paste, G, images, out)


def _edit_done(args: argparse.Namespace, G, **meta) -> int | None:
    from pathlib import Path

    out = Path(args.out)
    same = {**meta, "weights_sha256": getattr(G, "weights_sha256", None)}
    return _kept_or_done(out, out.with_name(out.stem + ".edit.json"), same, args.overwrite)


def _run_mix(args: argparse.Namespace) -> int:
    from ._io import check_output_file
    from .edits import mix_styles

    check_output_file(args.out, "OUT")
    _check_finite(args, ["strength"])
    (content, style), G, source = _latents_and_generator([args.content, args.style], args.weights, args.device)
    mask = _mask(args.rows, G.n_latent, "--rows")
    meta = dict(edit="mix", content=str(args.content), style=str(args.style), rows=str(mask), strength=args.strength)
    done = _edit_done(args, G, **meta)
    if done is not None:
        return done
    mixed = mix_styles(content.wplus, style.wplus, rows=mask, strength=args.strength)
    tuned, tuning = _tuned_generator(args, G, args.content)
    _write_edit(G, source, mixed, content.noises, args.out, render_G=tuned, paste=args, tuning=tuning, **meta)
    return 0


def _add_express(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("express", help="expression transfer: TARGET + strength * mask * (EMOTION - NEUTRAL)",
                       description="Reads saved projections (or {'wplus': tensor} / tensor .pt files); several "
                                   "latents in NEUTRAL and EMOTION are averaged into one delta. Writes OUT, OUT "
                                   "with suffix .pt (the edited W+, chainable) and <OUT>.edit.json.")
    p.add_argument("target", help="latents to edit (.pt)")
    p.add_argument("neutral", help="neutral reference latents (.pt)")
    p.add_argument("emotion", help="emotion reference latents (.pt)")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--mask", default="expression",
                   help="rows that get the delta, in the report's 18-row terms, scaled to smaller generators as "
                        "the notebooks do: '1-17', '0,2,4-6', 'all' or a preset (expression, happy, sad, fear, "
                        "...); default 'expression' = every row but 0 (lighting/glasses artefacts)")
    _add_latent_edit_options(p, strength_help="scale of the delta")
    p.set_defaults(func=_run_express)


def _run_express(args: argparse.Namespace) -> int:
    from ._io import check_output_file
    from .edits import apply_delta, expression_delta

    check_output_file(args.out, "OUT")
    _check_finite(args, ["strength"])
    (target, neutral, emotion), G, source = _latents_and_generator([args.target, args.neutral, args.emotion],
                                                                   args.weights, args.device)
    mask = _mask(args.mask, G.n_latent, "--mask")
    meta = dict(edit="express", target=str(args.target), neutral=str(args.neutral), emotion=str(args.emotion),
                mask=str(mask), strength=args.strength)
    done = _edit_done(args, G, **meta)
    if done is not None:
        return done
    delta = expression_delta(neutral.wplus, emotion.wplus)
    edited = apply_delta(target.wplus, delta, mask=mask, strength=args.strength)
    tuned, tuning = _tuned_generator(args, G, args.target)
    _write_edit(G, source, edited, target.noises, args.out, render_G=tuned, paste=args, tuning=tuning, **meta)
    return 0


def _add_swap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swap", help="face swap: put SOURCE's identity onto the projected TARGET",
                       description="Optimises TARGET's W+ rows (default 0-8) with an ArcFace identity loss towards "
                                   "SOURCE while holding the image outside the face. Writes OUT (the result), "
                                   "OUT with suffix .pt (swapped W+, noise maps, images) and .json (settings, "
                                   "identity/pose metrics incl. the independent dlib judge).")
    p.add_argument("source", help="identity donor: an aligned photo (resized to the generator's side) or a "
                                  "saved projection .pt")
    p.add_argument("target", help="saved projection .pt (or a .pt holding {'wplus': tensor})")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--weights", help="generator checkpoint; default: the one recorded with TARGET")
    p.add_argument("--arcface", help="ArcFace weights (insightface backbone.pth / pSp model_ir_se50.pth); "
                                     "default: the first found under data/, else a small random network (smoke run)")
    # swap settings default to facelib.SwapConfig's (None = not given)
    p.add_argument("--steps", type=int, help="optimisation steps (default 200)")
    p.add_argument("--rows", help="W+ rows to optimise: '0-8' (default), '0-3,5', 'coarse,middle', 'all'")
    p.add_argument("--id-weight", type=float, help="identity term weight (default 1.0)")
    p.add_argument("--latent-weight", type=float, help="pull towards the target's W+ (default 0)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 0.03)")
    p.add_argument("--mask", choices=["auto", "landmarks", "ellipse", "none"],
                   help="face region of the image terms (default auto: dlib landmarks, else the FFHQ ellipse)")
    p.add_argument("--lpips", choices=["auto", "vgg", "none"],
                   help="auto (default): use LPIPS when VGG16 weights are found locally; vgg: require them")
    p.add_argument("--vgg-path", help="torchvision vgg16-397923af.pth (file or folder)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-judge", action="store_true", help="skip the dlib identity/pose judge")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it was made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_tuning_and_paste_options(p)
    p.set_defaults(func=_run_swap)


def _run_swap(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .distributed import world

    if world().rank != 0:  # one swap is one job: under torchrun rank 0 does it, the other ranks have none
        log.info("swap: rank %d has no share of a single swap; rank 0 runs it", world().rank)
        return 0

    from ._io import check_output_file
    from .session import identity_network
    from .stamps import RANDOM_ID_STAMP, SMOKE_STAMP
    from .grids import save_image, stamp, to_pil
    from .swap import UNCHANGED_STAMP, SwapConfig, face_swap, resolve_rows

    _check_counts(args, ["steps"])
    _check_finite(args, ["id_weight", "latent_weight", "lr"])
    out = check_output_file(args.out, "OUT")
    (target,), G, g_source = _latents_and_generator([args.target], args.weights, args.device)
    source_path = Path(args.source)
    if source_path.suffix.lower() == ".pt":
        from .project import load_projection

        source = load_projection(source_path)
    else:
        source = source_path
    ident = identity_network(args.arcface)
    if ident.random:
        log.warning("no --arcface and none found under data/: using a small RANDOM identity network "
                    "(a smoke run; the identity figures mean nothing)")
    options = _given(args, ("steps", "rows", "id_weight", "latent_weight", "lr", "mask", "lpips", "seed"))
    tuned, tuning = _tuned_generator(args, G, args.target)
    if "rows" in options:
        try:
            options["rows"] = resolve_rows(options["rows"], G.n_latent)
        except InputError as e:
            raise InputError(f"--rows: {e}") from None
    planned = SwapConfig(**{**options, "rows": options.get("rows", resolve_rows(None, G.n_latent))})
    pt = out.with_suffix(".pt")
    done = _kept_or_done(out, pt.with_suffix(".json"), {
        "config": planned.to_dict(), "weights_sha256": getattr(G, "weights_sha256", None),
        "source_names": [str(args.source)], "target_names": [str(args.target)]}, args.overwrite)
    if done is not None:
        return done
    result = face_swap(tuned, ident.net, source, target, progress=not args.quiet, judge=not args.no_judge,
                       vgg_path=args.vgg_path, **options)  # the target's own noise maps are used
    image = to_pil(result.images[0])
    if _is_smoke(G):
        image = stamp(image, SMOKE_STAMP)
    elif ident.random:
        image = stamp(image, RANDOM_ID_STAMP)
    if result.unchanged[0]:
        image = stamp(image, UNCHANGED_STAMP)
    result = dataclasses.replace(result, source_names=[str(args.source)] * len(result),
                                 target_names=[str(args.target)] * len(result))
    save_image(image, out)  # the image first, the tensors and the JSON (marking a complete set) last
    meta = result.save(pt)
    print(f"wrote {out}, {pt} and {meta} ({g_source}; {ident.describe()}; rows {args.rows or 'default'}"
          f"{'; tuned ' + tuning if tuning else ''})")
    _paste_back(args, G, result.images[:1], str(out))
    print(result.caption(0) + ("" if not result.interrupted else "  [interrupted: best steps so far]"))
    if result.unchanged[0]:
        print(f"warning: {result.no_change_note(0)}")
    return 0


def _add_directions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("directions", help="find edit directions in W: sefa (from the weights), fit (from "
                                          "measured or given labels), pca (of mapped samples)",
                       description="Writes OUT_DIR/NAME.pt (the unit vectors) and OUT_DIR/NAME.json (method, rows, "
                                   "generator hash, accuracy); an existing NAME is kept unless --overwrite.")
    dsub = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration")
    common.add_argument("--device", default="auto", help=_DEVICE_HELP)
    common.add_argument("--out-dir", default="out/directions", help="folder of direction files")
    common.add_argument("--name", help="file name (default: the method and its options)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing file of that name")
    common.add_argument("--seed", type=int, default=0)
    sf = dsub.add_parser("sefa", parents=[common], help="closed form from the style weights (no sampling)")
    sf.add_argument("--rows", default="all", help="W+ rows: 'all', 'coarse', 'middle', 'fine', '0-3', ...")
    sf.add_argument("--k", type=int, default=10, help="number of directions")
    pc = dsub.add_parser("pca", parents=[common], help="principal axes of mapped w samples (GANSpace)")
    pc.add_argument("--k", type=int, default=10, help="number of directions")
    pc.add_argument("--samples", type=int, default=10000, help="mapped samples")
    ft = dsub.add_parser("fit", parents=[common], help="linear boundary between labelled latents (InterFaceGAN)")
    ft.add_argument("--attribute", default="smile",
                    help="measured on rendered samples: smile, mouth_open, eyes_open, yaw, pitch, or identity "
                         "(ArcFace similarity to --reference)")
    ft.add_argument("--reference", help="aligned photo of the person for --attribute identity")
    ft.add_argument("--arcface", help="ArcFace weights for --attribute identity (default: the first found)")
    ft.add_argument("--samples", type=int, default=500, help="samples to render and measure")
    ft.add_argument("--truncation", type=float, default=0.7)
    ft.add_argument("--scores", help="CSV of file,value rows for projected photos (instead of --attribute)")
    ft.add_argument("--latents", default="out/latents", help="saved projections that --scores names")
    ft.add_argument("--condition", action="append", default=[],
                    help="direction file whose direction is projected out (repeatable): change the "
                         "attribute, keep this one")
    p.set_defaults(func=_run_directions)


def _run_directions(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .direction_views import directions_for
    from .directions import conditional_direction, load_directions
    from .weights import resolve_device

    G = _generator(args.weights, resolve_device(args.device), seed=args.seed)
    if args.method in ("sefa", "pca"):
        kept, path, loaded = directions_for(G, args.method, rows=getattr(args, "rows", "all"), k=args.k,
                                            folder=args.out_dir, samples=getattr(args, "samples", 10000),
                                            seed=args.seed, name=args.name, overwrite=args.overwrite)
        if loaded:
            raise InputError(f"{path}: exists for this generator; pass --overwrite to recompute it or --name "
                             "for another file")
        print(f"wrote {path} and {path.with_suffix('.json')} ({len(kept)} directions, rows "
              f"{'all' if kept.rows is None else list(kept.rows)})")
        return 0
    name = args.name or ("scores" if args.scores else args.attribute)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"--name {name!r}: expected a plain file name")
    path = Path(args.out_dir) / f"{name}.pt"
    if path.exists() and not args.overwrite:
        raise InputError(f"{path}: exists; pass --overwrite to replace it or --name for another file")
    result = _fit_from_args(G, args, name)
    if args.condition:
        result = conditional_direction(result, *[load_directions(c)[0] for c in args.condition], name=name)
    if result.accuracy is not None:
        print(f"held-out accuracy {result.accuracy:.3f} ({result.meta.get('held_out', '?')} samples)")
    result.save(path)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _fit_from_args(G, args: argparse.Namespace, name: str):
    """The fit of ``directions fit``: user scores on projections, or an attribute measured on samples."""
    from pathlib import Path

    from ._optim import generator_id
    from .attributes import label_latents, latents_with_scores, read_scores
    from .directions import fit_direction
    from .edits import find_projections

    if args.scores:
        latents = find_projections(args.latents, G=G)
        if not latents:
            raise InputError(f"--latents {args.latents}: no saved projections for this generator")
        labelled = latents_with_scores(latents, read_scores(args.scores), attribute="score")
        values = labelled.scores["score"]
    else:
        ref, net = (None, None) if args.attribute != "identity" else _identity_reference(G, args)
        cache = Path(args.out_dir).parent / "cache" / f"labels_{args.attribute}.pt"  # reused when settings match
        labelled = label_latents(G, args.samples, [args.attribute], seed=args.seed, truncation=args.truncation,
                                 reference=ref, arcface=net, cache=cache)
        values = labelled.scores[args.attribute]
        if labelled.skipped == len(values):
            raise InputError(f"--attribute {args.attribute}: dlib found no face in any of the {len(values)} "
                             "samples (an untrained generator makes no faces); pass real --weights")
    return fit_direction(labelled.w, values, name=name, seed=args.seed, weights_sha256=generator_id(G))


def _identity_reference(G, args: argparse.Namespace):
    """(reference image (1, 3, H, W) in [-1, 1], ArcFace network) for ``directions fit --attribute identity``."""
    from .align import load_image
    from .session import identity_network
    from .grids import to_tensor

    if not args.reference:
        raise InputError("--attribute identity: pass --reference, an aligned photo of the person")
    ident = identity_network(args.arcface, device=G.device)
    if ident.path is None:
        raise InputError("--attribute identity: no ArcFace weights found; pass --arcface FILE "
                         "(a random network would make the labels meaningless)")
    return to_tensor(load_image(args.reference), size=G.resolution), ident.net


def _add_edit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="move saved latents along a direction: W+ + strength * sigma * direction "
                                    "on the chosen rows, and render",
                       description="Writes OUT, OUT with suffix .pt (the edited W+, chainable) and <OUT>.edit.json.")
    p.add_argument("latent", help="latents to edit (.pt, e.g. a saved projection)")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--direction", required=True, help="direction file (.pt with its .json, from `directions`)")
    p.add_argument("--index", type=int, default=0, help="which direction of the file (0 = the top one)")
    p.add_argument("--rows", help="rows to edit: 'coarse', 'fine', '0-3', 'all', ...; default: the rows the "
                                  "direction was found for (all for pca and fit)")
    p.add_argument("--units", choices=("sigma", "w"), default="sigma",
                   help="sigma: --strength counts standard deviations of w along the direction (default); "
                        "w: raw distance in W")
    _add_latent_edit_options(p, strength_help="how far to move (see --units); negative moves the other way")
    p.set_defaults(func=_run_edit)


def _run_edit(args: argparse.Namespace) -> int:
    from ._optim import generator_id
    from .directions import apply_direction, load_directions
    from .edits import LayerMask

    (latent,), G, source = _latents_and_generator([args.latent], args.weights, args.device)
    direction = load_directions(args.direction)[args.index]
    if direction.weights_sha256 and direction.weights_sha256 != generator_id(G):
        log.warning("%s was made for another generator (%s...); applying it anyway",
                    args.direction, direction.weights_sha256[:12])
    mask = LayerMask.coerce(args.rows if args.rows else (list(direction.rows) if direction.rows else None),
                            G.n_latent, name="--rows")
    unit = direction.sigma if args.units == "sigma" and direction.sigma else 1.0
    if args.units == "sigma" and not direction.sigma:
        log.warning("%s records no sigma: --strength is taken in W units", args.direction)
    edited = apply_direction(latent.wplus, direction, args.strength * unit, mask=mask)
    _write_edit(G, source, edited, latent.noises, args.out, edit="direction", latent=str(args.latent),
                direction=str(args.direction), index=args.index, method=direction.method, rows=str(mask),
                strength=args.strength, units=args.units, w_distance=args.strength * unit)
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_report,
    _add_data,
    _add_sample,
    _add_align,
    _add_project,
    _add_convert,
    _add_mix,
    _add_express,
    _add_swap,
    _add_directions,
    _add_edit,
]


#: Options accepted anywhere on the command line (before or after the sub-command).
_GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "--debug": "debug"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m facelib",
                                     description="Edit real face photos with a pretrained StyleGAN2.",
                                     epilog="-v and --debug may also follow the sub-command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def _global_flags(argv: Sequence[str]) -> tuple[list[str], set[str]]:
    """Take -v/--verbose/--debug out of ``argv`` wherever they are (up to a ``--``)."""
    rest: list[str] = []
    flags: set[str] = set()
    argv = list(argv)
    for k, a in enumerate(argv):
        if a == "--":
            rest += argv[k:]
            break
        if a in _GLOBAL_FLAGS:
            flags.add(_GLOBAL_FLAGS[a])
        else:
            rest.append(a)
    return rest, flags


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("PIL", "matplotlib", "urllib3", "asyncio"):  # their debug lines drown facelib's
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    import traceback

    from .errors import BatchInterrupted

    parser = build_parser()
    argv, flags = _global_flags(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    debug = "debug" in flags or args.debug
    _configure_logging("verbose" in flags or args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .losses import remember_notices, use_option_names

    names = use_option_names(lpips_off="--lpips none", lpips_required="--lpips vgg", vgg_path="--vgg-path")
    remembered = remember_notices(True)  # a notice is shown once, not on every command
    try:
        return int(args.func(args) or 0)
    except FacelibError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BatchInterrupted as e:
        print(e.result.summary(), file=sys.stderr)
        print("interrupted: finished results are complete; rerun the same command to go on", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a raw traceback for the user; --debug shows it
        if debug:
            traceback.print_exc()
        text = str(e).strip().splitlines()
        print(f"error: {type(e).__name__}: {text[0] if text else ''} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        use_option_names(**names)
        remember_notices(remembered)
