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
    """Import module ``name`` from ``folder`` (the shared fixtures' builders)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return __import__(name)


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
