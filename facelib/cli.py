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


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The options among ``names`` that were given (None = not given: the config's default applies)."""
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if options.get("lpips") == "none":
        options["lpips"] = None
    return options


def _generator(weights: str | None, device=None, *, seed: int = 0):
    """The generator in ``weights``, or without one the small untrained generator of smoke runs."""
    from .data import smoke_generator
    from .weights import load_generator

    if weights:
        return load_generator(weights, device=device)
    log.warning("no --weights: using the small untrained generator (a smoke run; results are not faces)")
    return smoke_generator(seed, device)


def _is_smoke(G) -> bool:
    """True for the untrained smoke generator (its fingerprint is marked so), whose images must be stamped."""
    return str(getattr(G, "weights_sha256", "")).startswith("smoke-")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="render a grid of random samples from a generator")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration")
    p.add_argument("--n", type=int, default=8, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from .data import SMOKE_STAMP
    from .grids import make_grid, save_image, stamp

    if args.n < 1:
        raise InputError(f"--n: expected at least 1 sample, got {args.n}")
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

    from .data import locate, verify_manifest

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
    from .data import KAGGLE_DATASETS, download

    results = download(args.dest, args.dataset or KAGGLE_DATASETS, force=args.force, on_progress=print)
    bad = [r for r in results if r.status == "failed" or r.problems]
    if bad:
        print(f"{len(bad)} dataset(s) with problems; see above")
    return 1 if bad else 0


def _run_data_verify(args: argparse.Namespace) -> int:
    from .data import verify_manifest

    problems = verify_manifest(args.dest, hashes=not args.quick)
    for pr in problems:
        print(f"{pr.path}: {pr.problem}")
    print("all files match the manifest" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="FFHQ-align every photo in a folder (dlib landmarks)",
                       description="Writes <DST>/<sub>/<stem>.png for the largest face of each photo, "
                                   "or <stem>_<k>.png for every face (k = 0 is the largest) with "
                                   "--all-faces. Photos whose output exists are skipped.")
    p.add_argument("src", help="folder of photos (searched recursively) or one photo")
    p.add_argument("dst", help="output folder")
    p.add_argument("--size", type=int, default=1024, help="output side in pixels (FFHQ: 1024)")
    p.add_argument("--all-faces", action="store_true", help="write every face, not only the largest")
    p.add_argument("--detector", choices=["hog", "cnn", "auto"], default="hog",
                   help="dlib detector; auto = HOG, then CNN when HOG finds nothing")
    p.add_argument("--predictor", help="shape_predictor_68_face_landmarks.dat (file or folder)")
    p.add_argument("--overwrite", action="store_true", help="redo photos whose outputs exist")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes (default: one per CPU core, at most one per 4 photos; 1 = in this process). "
                        "Under torchrun each rank aligns its share of the photos")
    p.add_argument("--warp", choices=["fast", "reference"], default="fast",
                   help="fast (default): one antialiased resampling, >= 40 dB of the reference; "
                        "reference: FFHQ's 4x supersampled warp, bit-exact")
    p.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    from .align import align_folder
    from .distributed import finish, init

    info = init("cpu")  # alignment runs on CPU cores; under torchrun the ranks share the photos (gloo)
    try:
        result = align_folder(args.src, args.dst, output_size=args.size, all_faces=args.all_faces,
                              detector=args.detector, predictor_path=args.predictor,
                              overwrite=args.overwrite, workers=args.workers or None, warp=args.warp)
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
    p.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration "
                                     "(a smoke run)")
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
    p.add_argument("--batch-size", type=int, default=4, help="images optimised together")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--cache-dir", help="reuse finished projections of identical images and settings")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default); bf16: autocast (Ampere+ GPUs, CPUs); fp16: autocast with loss scaling (T4, P100)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the generator step (CUDA graphs on GPUs); pays off on long runs")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", default=None,
                   help="keep matmuls/convolutions in full fp32 on Ampere+ GPUs")
    p.set_defaults(func=_run_project)


def _run_project(args: argparse.Namespace) -> int:
    from .distributed import finish, init
    from .project import project_folder
    from .weights import resolve_device

    info = init(args.device)  # under torchrun: join the group, this rank's device (cuda:LOCAL_RANK or CPU)
    try:
        G = _generator(args.weights, resolve_device(info.device))
        options = _given(args, ("steps", "lr", "scheduler", "gamma", "lpips", "lpips_weight", "mse_weight",
                                "noise_reg_weight", "seed", "precision", "compile", "tf32"))
        result = project_folder(args.aligned_dir, args.out_dir, G, batch_size=args.batch_size,
                                overwrite=args.overwrite, progress=not args.quiet, cache_dir=args.cache_dir,
                                vgg_path=args.vgg_path, **options)
    finally:
        finish()
    if info.rank == 0:  # the combined summary of every rank
        print(result.summary())
        if info.distributed:
            print(f"(all {info.world_size} processes; each result's JSON names its rank)")
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
    from .nvidia import convert_checkpoint

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
                   help="rows taken from STYLE: '9-17', '0,2,4-6' or a preset (coarse, middle, fine, style); "
                        "default 'style' = 9-17 of an 18-row generator, scaled to others")
    _add_latent_edit_options(p, strength_help="1 replaces the rows, 0..1 interpolates")
    p.set_defaults(func=_run_mix)


def _add_latent_edit_options(p: argparse.ArgumentParser, *, strength_help: str) -> None:
    """--strength, --weights and --device of the commands that edit saved latents."""
    p.add_argument("--strength", type=float, default=1.0, help=strength_help)
    p.add_argument("--weights", help="generator checkpoint; default: the one recorded with the latents")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)


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
    G, source = generator_for(latents, weights, device=resolve_device(device))
    want = (G.n_latent, G.style_dim)
    for lat in latents:
        if tuple(lat.wplus.shape[1:]) != want:
            raise ShapeError(f"{lat.path}: W+ {tuple(lat.wplus.shape[1:])} does not fit the generator {want}; "
                             "pass the --weights it was projected with",
                             actual_shape=lat.wplus.shape, expected_shape=(None, *want))
    return latents, G, source


def _write_edit(G, source: str, wplus, noises, out: str, **meta) -> None:
    from pathlib import Path

    from .data import SMOKE_STAMP
    from .edits import render, save_latents
    from .grids import make_grid, save_image, stamp, to_pil

    images = render(G, wplus, noise=noises)
    image = to_pil(images[0]) if images.shape[0] == 1 else make_grid([list(images)], cell=G.resolution)
    if _is_smoke(G):
        image = stamp(image, SMOKE_STAMP)
    save_image(image, out)
    pt = Path(out).with_suffix(".pt")
    save_latents(pt, wplus, noises=noises, weights_sha256=getattr(G, "weights_sha256", None),
                 weights_path=getattr(G, "source_path", None), **meta)
    print(f"wrote {out} and {pt} ({images.shape[0]} image(s), {source})")


def _run_mix(args: argparse.Namespace) -> int:
    from .edits import LayerMask, mix_styles

    (content, style), G, source = _latents_and_generator([args.content, args.style], args.weights, args.device)
    mask = LayerMask.coerce(args.rows, G.n_latent, name="--rows")
    mixed = mix_styles(content.wplus, style.wplus, rows=mask, strength=args.strength)
    _write_edit(G, source, mixed, content.noises, args.out, edit="mix", content=str(args.content),
                style=str(args.style), rows=str(mask), strength=args.strength)
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
                   help="rows that get the delta: '1-17', '0,2,4-6', 'all' or a preset (expression, happy, sad, "
                        "fear, ...); default 'expression' = every row but 0 (lighting/glasses artefacts)")
    _add_latent_edit_options(p, strength_help="scale of the delta")
    p.set_defaults(func=_run_express)


def _run_express(args: argparse.Namespace) -> int:
    from .edits import LayerMask, apply_delta, expression_delta

    (target, neutral, emotion), G, source = _latents_and_generator([args.target, args.neutral, args.emotion],
                                                                   args.weights, args.device)
    mask = LayerMask.coerce(args.mask, G.n_latent, name="--mask")
    delta = expression_delta(neutral.wplus, emotion.wplus)
    edited = apply_delta(target.wplus, delta, mask=mask, strength=args.strength)
    _write_edit(G, source, edited, target.noises, args.out, edit="express", target=str(args.target),
                neutral=str(args.neutral), emotion=str(args.emotion), mask=str(mask), strength=args.strength)
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_swap)


def _run_swap(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .distributed import world

    if world().rank != 0:  # one swap is one job: under torchrun rank 0 does it, the other ranks have none
        log.info("swap: rank %d has no share of a single swap; rank 0 runs it", world().rank)
        return 0

    from .data import RANDOM_ID_STAMP, SMOKE_STAMP, identity_network
    from .grids import save_image, stamp, to_pil
    from .swap import face_swap

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
    result = face_swap(G, ident.net, source, target, progress=not args.quiet, judge=not args.no_judge,
                       vgg_path=args.vgg_path, **options)  # the target's own noise maps are used
    out = Path(args.out)
    image = to_pil(result.images[0])
    if _is_smoke(G):
        image = stamp(image, SMOKE_STAMP)
    elif ident.random:
        image = stamp(image, RANDOM_ID_STAMP)
    result = dataclasses.replace(result, source_names=[str(args.source)] * len(result),
                                 target_names=[str(args.target)] * len(result))
    pt = out.with_suffix(".pt")
    meta = result.save(pt)
    save_image(image, out)
    print(f"wrote {out}, {pt} and {meta} ({g_source}; {ident.describe()}; rows {args.rows or 'default'})")
    print(result.caption(0) + ("" if not result.interrupted else "  [interrupted: best steps so far]"))
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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m facelib",
                                     description="Edit real face photos with a pretrained StyleGAN2.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FacelibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
