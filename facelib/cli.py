"""Command line: ``python -m facelib <command> ...``.

Thin wrappers over the library functions. The sub-commands live in :mod:`facelib.cli_data`
(demo, report, data, sample, align, project, convert) and :mod:`facelib.cli_edit` (mix, express,
swap, directions, edit), what they share in :mod:`facelib.cli_common`; this module builds the
parser from their ``COMMANDS`` lists and runs one command, turning every facelib error into one
line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from . import cli_data, cli_edit
from .errors import FacelibError

__all__ = ["main", "build_parser"]

log = logging.getLogger(__name__)

#: Every sub-command's ``add(sub)`` registration, in help order.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [*cli_data.COMMANDS, *cli_edit.COMMANDS]


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


def _print_stop_note() -> None:
    """Under torchrun: which rank stopped the launch (this one, or the one that stopped it)."""
    launch = sys.modules.get(f"{__package__}.distributed")  # never imports torch just to say nothing
    note = launch.stop_note() if launch is not None else None
    if note:
        print(note, file=sys.stderr)


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
        _print_stop_note()
        print("interrupted: finished results are complete; rerun the same command to go on", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        _print_stop_note()
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
