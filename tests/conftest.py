"""Shared fixtures: the ../shared reference folder and small generators."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a clear reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference fixture {p} is absent (../shared is not beside the checkout)")
    return p


def import_from(folder: Path, name: str):
    """Import module ``name`` from ``folder`` (the shared fixtures' builders).

    Each folder's module gets its own name (several folders hold a ``synth.py``), so one test
    never receives another folder's module from ``sys.modules``."""
    import importlib.util

    key = f"_shared_{Path(folder).name}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(folder) / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def make_small_generator(seed: int = 0):
    """StyleGAN2Generator(32, style_dim=64, n_mlp=2, channel_max=32), noise strengths 0.1, eval mode."""
    from facelib.stylegan2 import StyleGAN2Generator

    G = StyleGAN2Generator(resolution=32, style_dim=64, n_mlp=2, channel_max=32, seed=seed)
    with torch.no_grad():  # non-zero noise strengths so the noise path counts
        for m in G.modules():
            if m.__class__.__name__ == "NoiseInjection":
                m.weight.fill_(0.1)
    return G.eval()


@pytest.fixture
def small_generator():
    return make_small_generator()


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is fastest, and two threads thrash (10x+ slower)
    whenever anything else shares the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def grid_size(n_rows: int, n_cols: int, cell: int, *, row_labels: "list[str] | None" = None,
              col_labels: bool = False, captions: bool = False, title_lines: int = 0, pad: int = 4) -> tuple[int, int]:
    """(width, height) of a ``facelib.make_grid`` table (the layout ``test_grids`` pins with literal numbers)."""
    line = max(12, cell // 14)
    left = max(len(s) for s in row_labels) * line * 6 // 10 + 2 * pad if row_labels else 0
    top = line + 2 * pad if col_labels else 0
    head = (line + 2 * pad) * title_lines
    cap = line + pad if captions else 0
    return left + n_cols * (cell + pad) + pad, head + top + n_rows * (cell + cap + pad) + pad


def grid_cell(grid, row: int, col: int, cell: int, *, row_labels: "list[str] | None" = None,
              col_labels: bool = False, captions: bool = False, title_lines: int = 0, pad: int = 4):
    """The (cell x cell) image at ``row``, ``col`` of a ``facelib.make_grid`` table."""
    line = max(12, cell // 14)
    left = max(len(s) for s in row_labels) * line * 6 // 10 + 2 * pad if row_labels else 0
    top = line + 2 * pad if col_labels else 0
    head = (line + 2 * pad) * title_lines
    cap = line + pad if captions else 0
    x, y = left + pad + col * (cell + pad), head + top + pad + row * (cell + cap + pad)
    return grid.crop((x, y, x + cell, y + cell))


def title_lines(grid, n_rows: int, cell: int, *, row_labels: "list[str] | None" = None, col_labels: bool = False,
                captions: bool = False, pad: int = 4) -> int:
    """How many title lines a ``facelib.make_grid`` table has: its height less the rows' and labels',
    in whole lines (asserted)."""
    line = max(12, cell // 14)
    rest = grid.height - grid_size(n_rows, 1, cell, col_labels=col_labels, captions=captions, pad=pad)[1]
    assert rest >= 0 and rest % (line + 2 * pad) == 0, f"{grid.size}: not whole title lines above the rows"
    return rest // (line + 2 * pad)
