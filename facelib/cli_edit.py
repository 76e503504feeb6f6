"""Command line, the editing sub-commands: ``mix``, ``express``, ``swap``, ``directions``, ``edit``,
and what they share (saved latents with their generator, pivotal tuning, pasting back into the
photo, writing an edit).

Each command is one ``_add_<name>`` function that registers its sub-parser and sets ``func``;
:data:`COMMANDS` lists them in help order (:mod:`facelib.cli` puts them on the parser).
Heavy modules are imported inside the handlers so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import logging
from typing import Callable, Sequence

from .cli_common import (DEVICE_HELP, check_counts, check_finite, given_options, is_smoke, kept_or_done,
                         mask_option, open_generator, writing_output)
from .errors import InputError

__all__ = ["COMMANDS"]

log = logging.getLogger(__name__)


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
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
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


def _tuning_file(args: argparse.Namespace, latent_path: str):
    """The tuning to render through: --tuning, else the <stem>.tune.pt beside the latent; None with
    --no-tuning or when there is none.

    Also checks --paste-back's alignment and photo first, so a bad one fails before any output is written.
    """
    from pathlib import Path

    from .tuning import tuning_path

    if getattr(args, "paste_back", None):  # fail before writing anything when the photo cannot be found
        from .align_batch import load_alignment

        face = load_alignment(args.paste_back)
        if not face.source or not Path(face.source).is_file():
            raise InputError(f"--paste-back {args.paste_back}: its photo {face.source!r} was not found")
    if getattr(args, "no_tuning", False):
        return None
    path = Path(args.tuning) if getattr(args, "tuning", None) else tuning_path(latent_path)
    return path if args.tuning or path.is_file() else None


def _tuned_generator(G, path):
    """(generator to render with, tuning file or None): the tuning ``path`` (from
    :func:`_tuning_file`) loaded against ``G``, or ``G`` itself without one."""
    from .tuning import load_tuning

    if path is None:
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
                     stamp_text=SMOKE_STAMP if is_smoke(G) else None)
    print(f"wrote {dst} (the edit pasted into the photo)")


def _inputs(*paths: str) -> dict:
    """{path: first 16 hex digits of the file's SHA-256}: what an output was made from, so a rerun
    after an input file changed keeps the finished output instead of calling it done."""
    from .weights import file_sha256

    return {str(p): file_sha256(p)[:16] for p in paths}


def _paste_done(args: argparse.Namespace, G, out) -> None:
    """--paste-back on an output that is already done: make the photo from OUT as saved, if it is missing."""
    if not getattr(args, "paste_back", None):
        return
    from .align import load_image
    from .grids import to_tensor
    from .paste import photo_path

    if not photo_path(out).exists():
        _paste_back(args, G, to_tensor(load_image(out), G.resolution), str(out))


def _latents_and_generator(paths: Sequence[str], weights: str | None, device: str):
    """Read saved latents and the generator they belong to (:func:`facelib.edits.generator_for`).

    Returns:
        (list of SavedLatents, generator, where the generator came from).
    Raises:
        ShapeError: a file's W+ rows do not fit the generator (the message names the file).
    """
    from .latents import generator_for, load_latents
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


def _write_edit(G, source: str, wplus, noises, out: str, *, settings: dict, render_G=None,
                paste: argparse.Namespace | None = None, **meta) -> None:
    """Render ``wplus`` and write OUT, OUT's .pt and .edit.json (and the pasted photo) under a
    :func:`facelib.cli_common.writing_output` marker of ``settings``."""
    from pathlib import Path

    from .stamps import SMOKE_STAMP
    from .edits import render
    from .latents import save_latents
    from .grids import make_grid, save_image, stamp, to_pil

    images = render(render_G if render_G is not None else G, wplus, noise=noises)
    image = to_pil(images[0]) if images.shape[0] == 1 else make_grid([list(images)], cell=G.resolution)
    if is_smoke(G):
        image = stamp(image, SMOKE_STAMP)
    pt = Path(out).with_suffix(".pt")
    with writing_output(out, settings):
        save_image(image, out)
        save_latents(pt, wplus, noises=noises, weights_sha256=getattr(G, "weights_sha256", None),
                     weights_path=getattr(G, "source_path", None), **meta)
        print(f"wrote {out} and {pt} ({images.shape[0]} image(s), {source})")
        if paste is not None:
            _paste_back(paste, G, images, out)


def _edit_done(args: argparse.Namespace, G, **meta) -> tuple[int | None, dict]:
    """(:func:`facelib.cli_common.kept_or_done` for OUT, the settings that make OUT). ``meta``
    includes ``tuning`` (the tuning file rendered through, or None)."""
    from pathlib import Path

    out = Path(args.out)
    same = {**meta, "weights_sha256": getattr(G, "weights_sha256", None)}
    done = kept_or_done(out, out.with_name(out.stem + ".edit.json"), same, args.overwrite)
    if done == 0:
        _paste_done(args, G, out)
    return done, same


def _finish_edit(args: argparse.Namespace, G, source: str, edited, latent, latent_path: str,
                 input_paths: Sequence[str], /, **meta) -> int:
    """What ``mix``, ``express`` and ``edit`` share once the edited W+ is known: the settings
    (``meta`` plus the tuning rendered through and the inputs' hashes), the keep-or-redo rule,
    then rendering and writing OUT through the tuning beside ``latent_path``. Returns the exit code."""
    tuning_file = _tuning_file(args, latent_path)
    meta.update(tuning=str(tuning_file) if tuning_file else None, inputs=_inputs(*input_paths))
    done, settings = _edit_done(args, G, **meta)
    if done is not None:
        return done
    tuned, _ = _tuned_generator(G, tuning_file)
    _write_edit(G, source, edited, latent.noises, args.out, settings=settings, render_G=tuned, paste=args, **meta)
    return 0


def _run_mix(args: argparse.Namespace) -> int:
    from ._io import check_output_file
    from .edits import mix_styles

    check_output_file(args.out, "OUT")
    check_finite(args, ["strength"])
    (content, style), G, source = _latents_and_generator([args.content, args.style], args.weights, args.device)
    mask = mask_option(args.rows, G.n_latent, "--rows")
    mixed = mix_styles(content.wplus, style.wplus, rows=mask, strength=args.strength)
    return _finish_edit(args, G, source, mixed, content, args.content, [args.content, args.style], edit="mix",
                        content=str(args.content), style=str(args.style), rows=str(mask), strength=args.strength)


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
    check_finite(args, ["strength"])
    (target, neutral, emotion), G, source = _latents_and_generator([args.target, args.neutral, args.emotion],
                                                                   args.weights, args.device)
    mask = mask_option(args.mask, G.n_latent, "--mask")
    edited = apply_delta(target.wplus, expression_delta(neutral.wplus, emotion.wplus), mask=mask,
                         strength=args.strength)
    return _finish_edit(args, G, source, edited, target, args.target, [args.target, args.neutral, args.emotion],
                        edit="express", target=str(args.target), neutral=str(args.neutral),
                        emotion=str(args.emotion), mask=str(mask), strength=args.strength)


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
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
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
    from .stamps import SMOKE_STAMP
    from .swap import SwapConfig, face_swap, resolve_rows, save_swaps

    check_counts(args, ["steps"])
    check_finite(args, ["id_weight", "latent_weight", "lr"])
    out = check_output_file(args.out, "OUT")
    (target,), G, g_source = _latents_and_generator([args.target], args.weights, args.device)
    source_path = Path(args.source)
    if source_path.suffix.lower() == ".pt":
        from .projection import load_projection

        source = load_projection(source_path)
    else:
        source = source_path
    # as notebook 05: --arcface, else the one found under data/ (not in a smoke run), else the small random one
    ident = identity_network(args.arcface, smoke=is_smoke(G), device=G.device, seed=args.seed or 0)
    if ident.random:
        why = "a smoke run" if is_smoke(G) else "no --arcface and none found under data/"
        log.warning("using a small RANDOM identity network (%s; the identity figures mean nothing)", why)
    options = given_options(args, ("steps", "rows", "id_weight", "latent_weight", "lr", "mask", "lpips", "seed"))
    tuned, tuning = _tuned_generator(G, _tuning_file(args, args.target))
    if "rows" in options:
        try:
            options["rows"] = resolve_rows(options["rows"], G.n_latent)
        except InputError as e:
            raise InputError(f"--rows: {e}") from None
    planned = SwapConfig(**{**options, "rows": options.get("rows", resolve_rows(None, G.n_latent))})
    pt = out.with_suffix(".pt")
    # the record holds the generator rendered through: a tuned copy has its own id
    settings = {"config": planned.to_dict(), "weights_sha256": getattr(tuned, "weights_sha256", None),
                "source_names": [str(args.source)], "target_names": [str(args.target)],
                "inputs": _inputs(args.source, args.target)}
    done = kept_or_done(out, pt.with_suffix(".json"), settings, args.overwrite)
    if done == 0:
        _paste_done(args, G, out)
    if done is not None:
        return done
    result = face_swap(tuned, ident.net, source, target, progress=not args.quiet, judge=not args.no_judge,
                       vgg_path=args.vgg_path, **options)  # the target's own noise maps are used
    result = dataclasses.replace(result, source_names=[str(args.source)] * len(result),
                                 target_names=[str(args.target)] * len(result))
    # the image first, the tensors and the JSON (the record) last, inside a marker of these settings
    with writing_output(out, settings):
        save_swaps(result.select([0]), [out], stamps=[SMOKE_STAMP if is_smoke(G) else None], random_id=ident.random,
                   extra={"inputs": settings["inputs"]})
        meta = pt.with_suffix(".json")
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
    common.add_argument("--device", default="auto", help=DEVICE_HELP)
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

    G = open_generator(args.weights, resolve_device(args.device), seed=args.seed)
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
    from .edit_inputs import find_projections

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
    from ._io import check_output_file
    from ._optim import generator_id
    from .directions import apply_direction, load_directions
    from .edits import LayerMask

    check_output_file(args.out, "OUT")
    check_finite(args, ["strength"])
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
    return _finish_edit(args, G, source, edited, latent, args.latent, [args.latent, args.direction],
                        edit="direction", latent=str(args.latent), direction=str(args.direction), index=args.index,
                        method=direction.method, rows=str(mask), strength=args.strength, units=args.units,
                        w_distance=args.strength * unit)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_mix,
    _add_express,
    _add_swap,
    _add_directions,
    _add_edit,
]
