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

from .errors import FacelibError

__all__ = ["main"]


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="render a grid of random samples from a generator")
    p.add_argument("out", help="output image (.png/.jpg)")
    p.add_argument("--weights", help="generator checkpoint; default: the small untrained configuration")
    p.add_argument("--n", type=int, default=8, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from .grids import make_grid, save_image, stamp
    from .stylegan2 import StyleGAN2Generator
    from .weights import load_generator

    torch.manual_seed(args.seed)
    if args.weights:
        G, label = load_generator(args.weights), None
    else:
        G = StyleGAN2Generator(resolution=64, style_dim=64, n_mlp=2, channel_max=64, seed=args.seed)
        label = "untrained generator - smoke run (pass --weights to use a real checkpoint)"
    g = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, G.style_dim, generator=g)
    with torch.no_grad():
        w = G.mapping(z)
        if args.truncation < 1:
            avg = G.latent_avg if G.latent_avg is not None else G.mean_latent(4096)
            w = avg + args.truncation * (w - avg)
        images = G.synthesis(w[:, None].repeat(1, G.n_latent, 1))
    cols = min(args.n, 4)
    rows = [list(images[i:i + cols]) for i in range(0, args.n, cols)]
    grid = make_grid(rows, cell=min(256, G.resolution * 2))
    if label:
        grid = stamp(grid, label)
    save_image(grid, args.out)
    print(f"wrote {args.out} ({args.n} samples, {G.resolution} px)")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: run the pipeline and write results into out/")
    p.add_argument("--out", default="out", help="results folder")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    return _run_sample(argparse.Namespace(out=str(Path(args.out) / "grids" / "00_samples.png"), weights=None,
                                          n=8, seed=0, truncation=1.0))


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_sample,
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
