"""facelib.losses: offline LPIPS loading, noise regulariser, identity and pixel terms."""
from __future__ import annotations

import logging
import urllib.request
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelib.errors import CheckpointError, DependencyError, InputError
from facelib.losses import (LPIPSLoss, downsample_to, find_vgg16_weights, identity_loss, identity_similarity,
                            load_lpips_vgg, mse_per_image, noise_regularize, normalize_noises_, psnr,
                            resolve_lpips)

lpips = pytest.importorskip("lpips")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _torchvision_vgg16_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's vgg16().state_dict(), built on the meta device (no weights)."""
    import torchvision

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torchvision.models.vgg16(weights=None)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _fake_vgg16_file(path, seed=0):
    """Random tensors in torchvision's VGG16 layout (features only; the classifier is 100M+ values
    and lpips does not use it) saved like the hub cache file."""
    g = torch.Generator().manual_seed(seed)
    layout = _torchvision_vgg16_layout()
    state = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in layout.items() if k.startswith("features.")}
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def fake_vgg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vgg")
    state = _fake_vgg16_file(folder / "vgg16-397923af.pth")
    return folder, state


def test_fake_vgg_file_is_loaded_into_lpips_trunk(fake_vgg, no_network):
    folder, state = fake_vgg
    net = load_lpips_vgg(folder / "vgg16-397923af.pth")
    own = net.state_dict()
    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    n_checked = 0
    for key, value in state.items():
        idx = int(key.split(".")[1])
        k = next(s for s, r in slices.items() if idx in r)
        assert torch.equal(own[f"net.slice{k}.{idx}.{key.split('.')[2]}"], value), key
        n_checked += 1
    assert n_checked == 26  # 13 convs x (weight, bias)
    # the linear heads are the package's calibrated ones, not random
    heads = torch.load(lpips.__path__[0] + "/weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    assert torch.equal(own["lin0.model.1.weight"], heads["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    # cached per file: the second call returns the same module without rebuilding
    assert load_lpips_vgg(folder) is net


def test_vgg_search_uses_facelib_data(fake_vgg, monkeypatch, tmp_path, no_network, caplog):
    folder, _ = fake_vgg
    monkeypatch.setenv("FACELIB_DATA", str(folder))
    assert find_vgg16_weights() == folder / "vgg16-397923af.pth"
    with caplog.at_level(logging.WARNING, logger="facelib.losses"):
        loss = resolve_lpips("auto")
    assert isinstance(loss, LPIPSLoss) and loss.source.endswith("vgg16-397923af.pth")
    assert not [r for r in caplog.records if "LPIPS is off" in r.getMessage()]
    monkeypatch.setenv("FACELIB_DATA", "")
    named = resolve_lpips("auto", vgg_path=folder)  # a named folder is used with "auto" too
    assert isinstance(named, LPIPSLoss) and named.net is loss.net


def test_wrong_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "vgg16.pth"
    torch.save({"style.1.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(CheckpointError, match="not a torchvision VGG16"):
        load_lpips_vgg(bad)
    with pytest.raises(DependencyError, match="not found"):
        load_lpips_vgg(tmp_path / "missing.pth")


def test_lpips_loss_matches_lpips_and_downsamples(fake_vgg):
    folder, _ = fake_vgg
    net = load_lpips_vgg(folder)
    loss = LPIPSLoss(net)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(3, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    assert torch.allclose(loss(a, b), net(a, b).flatten(), atol=1e-6)
    assert torch.allclose(loss(a, a), torch.zeros(3), atol=1e-7)
    # inputs larger than the working size (256 by default; 32 here to keep it cheap) are block-averaged
    small = LPIPSLoss(net, size=32)
    assert torch.allclose(small(a, b), net(F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)).flatten(), atol=1e-6)
    assert loss.size == 256
    # per image: changing image 1 leaves image 0's distance alone
    b2 = b.clone()
    b2[1] = -b2[1]
    assert torch.allclose(loss(a, b2)[0], loss(a, b)[0]) and not torch.allclose(loss(a, b2)[1], loss(a, b)[1])


def test_offline_auto_warns_once_and_vgg_raises(monkeypatch, tmp_path, caplog):
    import facelib.losses as L

    monkeypatch.setenv("FACELIB_DATA", "")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    if find_vgg16_weights() is not None:
        pytest.skip(f"a VGG16 file exists at {find_vgg16_weights()}; the offline path cannot be shown here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(L, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="facelib.losses"):
        assert resolve_lpips("auto") is None
        assert resolve_lpips("auto") is None
    msgs = [r.getMessage() for r in caplog.records if "LPIPS is off" in r.getMessage()]
    assert len(msgs) == 1 and "vgg16-397923af.pth" in msgs[0] and "lpips='vgg'" in msgs[0]
    assert len(msgs[0]) < 300 and "\n" not in msgs[0]  # one short line
    # the command line remembers it: shown by one process, quiet in the next
    monkeypatch.setattr(L, "_REMEMBER", {"notices": True})
    for shown in (1, 0):
        monkeypatch.setattr(L, "_WARNED", set())  # a new process
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="facelib.losses"):
            assert resolve_lpips("auto") is None
        assert len([r for r in caplog.records if "LPIPS is off" in r.getMessage()]) == shown
    with pytest.raises(DependencyError, match="vgg16-397923af.pth"):
        resolve_lpips("vgg")
    with pytest.raises(DependencyError):  # a named file must exist, even with "auto"
        resolve_lpips("auto", vgg_path=tmp_path / "nope.pth")
    assert resolve_lpips(None) is None and resolve_lpips("none") is None
    with pytest.raises(InputError):
        resolve_lpips("alex")


def test_noise_regularize_scores_structure_per_image():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(2, 1, 64, 64, generator=g)
    smooth = F.interpolate(torch.randn(2, 1, 8, 8, generator=g), size=64, mode="bilinear", align_corners=False)
    normalize_noises_([smooth])
    w, s = noise_regularize([white]), noise_regularize([smooth])
    assert w.shape == (2,) and (s > 50 * w).all()
    # by hand for one 8x8 map (a single scale)
    x = torch.randn(1, 1, 8, 8, generator=g)
    want = (x * x.roll(1, 3)).mean() ** 2 + (x * x.roll(1, 2)).mean() ** 2
    assert torch.allclose(noise_regularize([x]), want[None])
    # 16x16: the map and its 2x2 block mean
    y = torch.randn(1, 1, 16, 16, generator=g)
    y8 = y.reshape(1, 1, 8, 2, 8, 2).mean((3, 5))
    want = sum((z * z.roll(1, 3)).mean() ** 2 + (z * z.roll(1, 2)).mean() ** 2 for z in (y, y8))
    assert torch.allclose(noise_regularize([y]), want[None])
    # independence: image 0's value does not depend on image 1
    mixed = torch.cat([white[:1], smooth[1:]])
    assert torch.allclose(noise_regularize([mixed])[0], w[0])


def test_normalize_noises_per_image():
    noise = torch.randn(3, 1, 16, 16) * torch.tensor([0.5, 2.0, 7.0]).view(3, 1, 1, 1) + 3
    normalize_noises_([noise])
    flat = noise.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.std(1), torch.ones(3), atol=1e-5)


def test_psnr_mse_downsample():
    a = torch.zeros(2, 3, 8, 8)
    b = a + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)
    assert torch.allclose(mse_per_image(a, b), torch.tensor([0.04, 0.0004]))
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 40.0]), atol=1e-4)
    x = torch.randn(1, 3, 512, 512)
    assert torch.allclose(downsample_to(x, 256), F.avg_pool2d(x, 2))
    assert downsample_to(x[..., :32, :32], 256).shape[-1] == 32


class TinyIdNet(nn.Module):
    """(N, 3, 112, 112) -> (N, 16) normalised embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.fc = nn.Linear(8 * 4 * 4, 16)

    def forward(self, x):
        assert x.shape[1:] == (3, 112, 112)
        h = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4)
        return F.normalize(self.fc(h.flatten(1)), dim=1)


def test_identity_loss():
    net = TinyIdNet().eval()
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    from facelib.identity import identity_crop

    emb = net(identity_crop(imgs))
    assert torch.allclose(identity_loss(net, imgs, emb), torch.zeros(3), atol=1e-6)
    other = identity_loss(net, imgs.flip(0), emb)
    assert other.shape == (3,) and other[0] > 1e-3 and (other >= -1e-6).all() and (other <= 2).all()
    imgs.requires_grad_(True)
    identity_similarity(net, imgs, emb[:1]).sum().backward()  # (1, E) broadcasts
    assert imgs.grad is not None and torch.isfinite(imgs.grad).all()
    with pytest.raises(InputError):
        identity_loss(net, imgs, emb[:, :4])


def _noise_regularize_naive(noises):
    """The per-map loop of the reference projectors, per image."""
    total = 0
    for noise in noises:
        x = noise
        while True:
            size = x.shape[-1]
            total = total + (x * x.roll(1, 3)).flatten(1).mean(1) ** 2 + (x * x.roll(1, 2)).flatten(1).mean(1) ** 2
            if size <= 8:
                break
            x = x.reshape(x.shape[0], 1, size // 2, 2, size // 2, 2).mean((3, 5))
    return total


def test_noise_regularize_matches_per_map_pyramids():
    g = torch.Generator().manual_seed(3)
    # a 64 px generator's layout (4, 8, 8, 16, 16, 32, 32, 64, 64), with some structure mixed in
    sizes = [4, 8, 8, 16, 16, 32, 32, 64, 64]
    noises = [torch.randn(3, 1, r, r, generator=g) + 0.5 * torch.linspace(-1, 1, r).view(1, 1, 1, r) for r in sizes]
    assert torch.allclose(noise_regularize(noises), _noise_regularize_naive(noises), rtol=1e-5, atol=1e-8)
    odd = [noises[0], noises[3]]  # missing sizes in between
    assert torch.allclose(noise_regularize(odd), _noise_regularize_naive(odd), rtol=1e-5, atol=1e-8)
