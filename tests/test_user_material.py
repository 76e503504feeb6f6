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


# ----------------------------------------------------------------------------------------
# data status: packed downloads and NVIDIA pickles
# ----------------------------------------------------------------------------------------

def test_data_status_reports_downloads_that_are_still_packed(tmp_path):
    import gzip
    import io
    import lzma
    import tarfile
    import zipfile

    from facelib.data import classify_file, locate

    root = tmp_path / "downloads"
    (root / "photos").mkdir(parents=True)
    photo = root / "photos" / "Neutral copy.JPG"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with tarfile.open(root / "aligned-data.tar", "w") as tf:
        tf.add(photo, arcname="AJoly/2.jpg")
    with tarfile.open(root / "style-gan-data.TAR.GZ", "w:gz") as tf:
        tf.add(photo, arcname="x.jpg")
    with zipfile.ZipFile(root / "styles-expressions.zip", "w") as zf:
        zf.writestr("expressions/Happy copy.jpg", b"jpeg")
    (root / "stylegan2-ffhq-config-f.pt.gz").write_bytes(gzip.compress(b"\x80\x02weights" * 100))
    (root / "model.xz").write_bytes(lzma.compress(b"abc" * 100))
    expected = {"aligned-data.tar": "tar -xf", "style-gan-data.TAR.GZ": "tar -xzf",
                "styles-expressions.zip": "unzip", "stylegan2-ffhq-config-f.pt.gz": "gunzip -k",
                "model.xz": "unxz -k"}
    for name, command in expected.items():
        res = classify_file(root / name)
        assert res is not None and "not unpacked" in res.problem and f"{command} '{name}'" in res.problem, (name, res)
    inv = locate([root])
    assert {p.path.name for p in inv.problems} == set(expected)  # problems, not silently skipped
    text = inv.summary()
    assert all(name in text for name in expected)


def _synthetic_nvidia_pickle(path, *, resolution: int, num_ws: int | None, w_dim: int = 512) -> None:
    """A pickle with the persistence marker and a generator's constructor arguments, as
    stylegan2-ada-pytorch writes them (built with a stand-in module; never unpickled by facelib)."""
    import pickle
    import sys
    import types

    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Net:
        def __init__(self, kwargs):
            self.kwargs = kwargs

        def __reduce__(self):
            return (_reconstruct_persistent_obj, ({"type": "class", "module_src": "", "class_name": "Generator",
                                                   "state": {"init_kwargs": self.kwargs}},))

    synth = {"w_dim": w_dim, "img_resolution": resolution, "img_channels": 3}
    if num_ws is not None:
        synth["num_ws"] = num_ws
    g_kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": w_dim, "img_resolution": resolution, "img_channels": 3,
                "synthesis_kwargs": synth}
    pkg = types.ModuleType("torch_utils")
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = pkg, mod
    try:
        data = pickle.dumps({"G": Net(g_kwargs), "D": Net({"img_resolution": resolution}), "G_ema": Net(g_kwargs)},
                            protocol=4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    path.write_bytes(data + bytes(1000))


@pytest.mark.parametrize("resolution,num_ws,rows", [(1024, 18, 18), (256, None, 14), (64, 10, 10)])
def test_data_status_shows_resolution_and_rows_of_nvidia_pickles(tmp_path, resolution, num_ws, rows):
    from facelib.data import classify_file, locate

    path = tmp_path / "network-snapshot.pkl"
    _synthetic_nvidia_pickle(path, resolution=resolution, num_ws=num_ws)
    found = classify_file(path)
    assert found.kind == "generator" and found.format == "nvidia-pickle"
    assert f"{resolution} px" in found.detail and f"{rows} W+ rows" in found.detail
    assert f"{resolution} px, {rows} W+ rows" in locate([tmp_path]).summary()


def test_data_status_reads_the_reference_nvidia_pickle():
    from facelib.data import classify_file

    from .conftest import SHARED

    ref = SHARED / "refs" / "nvidia" / "nvidia_g64_nosrc.pkl"
    if not ref.is_file():
        pytest.skip(f"{ref} is absent")
    assert classify_file(ref).detail.startswith("64 px, 10 W+ rows, style dim 512")
