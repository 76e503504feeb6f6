"""The user's own material and session: report-named datasets, caches, no-op swaps, progress,
data status, report layout, CLI row scaling, and the notebooks' kernel check."""
from __future__ import annotations

import pytest
import torch

import facelib


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------------------
# Progress bar
# ----------------------------------------------------------------------------------------

class _RecordingBar:
    """Stands in for tqdm: records the postfix present at each update."""

    instances: list["_RecordingBar"] = []

    def __init__(self, *args, **kwargs):
        self.postfix: dict = {}
        self.at_update: list[dict] = []
        _RecordingBar.instances.append(self)

    def set_postfix(self, refresh=True, **kw):
        self.postfix = dict(kw)

    def update(self, n=1):
        self.at_update.append(dict(self.postfix))

    def close(self):
        pass


def test_progress_bar_shows_loss_and_lr_of_every_step(small_generator, monkeypatch):
    import tqdm.auto

    from facelib.project import ProjectConfig, project

    monkeypatch.setattr(tqdm.auto, "tqdm", _RecordingBar)
    _RecordingBar.instances.clear()
    G = small_generator
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(1, G.style_dim))[:, None].repeat(1, G.n_latent, 1)).clamp(-1, 1)
    cfg = ProjectConfig(steps=12, scheduler="rampupdown", lr=0.2, mse_weight=1.0, lpips=None)
    p = project(G, x, config=cfg, progress=True)
    bar = _RecordingBar.instances[-1]
    assert len(bar.at_update) == 12
    assert all("loss" in pf and "lr" in pf for pf in bar.at_update)  # present from the first update on
    losses = [pf["loss"] for pf in bar.at_update]
    assert losses == [f"{v:.4g}" for v in p.history[0]["loss"]]  # refreshed every step
    assert all(float(pf["lr"]) > 0 for pf in bar.at_update)  # never the warm-up's lr=0
    assert bar.at_update[0]["lr"] == f"{cfg.lr_at(1):.3g}"
