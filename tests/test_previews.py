"""facelib.previews: the swap preview renders one pair, reuses results per setting, refuses bad inputs early."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import facelib
from facelib import previews
from facelib.edit_inputs import random_latents
from facelib.errors import InputError, ShapeError
from facelib.previews import Preview, SwapPreview

from .conftest import make_small_generator


@pytest.fixture(scope="module")
def G():
    return make_small_generator()


@pytest.mark.slow
def test_swap_preview_renders_one_pair_and_reuses_each_setting(G, monkeypatch):
    id_net = facelib.build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=0)
    w = random_latents(G, 3, seed=4)
    with torch.no_grad():
        sources = G.synthesis(w[1:]).clamp(-1, 1)  # two sources, two targets: only the first pair is shown
    calls = []
    real = previews.face_swap

    def counting(*a, **k):
        calls.append(k["rows"])
        return real(*a, **k)

    monkeypatch.setattr(previews, "face_swap", counting)
    preview = SwapPreview(G, id_net, sources, w[:2], cell=32, lpips=None, steps=2, mask="ellipse")
    assert isinstance(preview, Preview)
    assert preview.source.shape == (1, 3, G.resolution, G.resolution) and preview.target.wplus.shape[0] == 1
    first = preview(rows=(0, 2))  # an IntRangeSlider pair
    assert isinstance(first, Image.Image) and calls == [(0, 1, 2)]
    again = preview(rows=range(0, 3))  # the same rows in another form: reused, not optimised again
    assert calls == [(0, 1, 2)] and np.array_equal(np.asarray(first), np.asarray(again))
    preview(rows="1")
    assert calls == [(0, 1, 2), (1,)]


def test_swap_preview_refuses_bad_inputs_when_built(G):
    id_net = facelib.build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=0)
    w = random_latents(G, 1)
    good = torch.zeros(1, 3, G.resolution, G.resolution)
    with pytest.raises(ShapeError, match="source"):
        SwapPreview(G, id_net, torch.zeros(1, 4, 8, 8), w)
    with pytest.raises(InputError, match="source"):
        SwapPreview(G, id_net, [good], w)
    with pytest.raises(ShapeError, match="target"):
        SwapPreview(G, id_net, good, torch.zeros(1, G.n_latent + 1, G.style_dim))


def test_preview_watch_combines_settings_and_getters():
    class Echo(Preview):
        def __call__(self, a=0, b=0):
            return (a, b)

    class Widget:
        def __init__(self):
            self.value, self.handlers = 0, []

        def observe(self, handler, names):
            self.handlers.append(handler)

    shown, slider = [], Widget()
    Echo().watch(shown.append, [slider], lambda: {"a": slider.value}, b=lambda: 7)
    slider.value = 3
    for h in slider.handlers:
        h()
    assert shown == [(0, 7), (3, 7)]
