"""CUDA checks (skipped without a GPU): the generator gives the CPU's numbers on the device."""
from __future__ import annotations

import pytest
import torch

import facelib
from facelib.stylegan2 import StyleGAN2Generator

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("fused", [False, True])
def test_generator_on_cuda_matches_cpu(fused):
    G = StyleGAN2Generator(256, seed=0).eval().requires_grad_(False)
    G.set_fused_modconv(fused)
    w = torch.randn(2, G.n_latent, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = G.synthesis(w)
        Gc = facelib.load_generator(G.state_dict(), device="cuda")
        Gc.set_fused_modconv(fused)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu = Gc.synthesis(w.cuda()).cpu()
    assert (cpu - gpu).abs().max() < 1e-3 * max(1.0, float(cpu.abs().max()))


def test_backward_on_cuda_is_finite():
    Gc = facelib.load_generator(StyleGAN2Generator(256, seed=0).state_dict(), device="cuda")
    w = torch.randn(4, Gc.n_latent, 512, device="cuda", requires_grad=True)
    Gc.synthesis(w).square().mean().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
