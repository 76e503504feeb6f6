"""Direction files reused across runs, strips, the preview with its sliders, exported edits."""
from __future__ import annotations

import pytest
import torch

from facelib.direction_views import directions_for, export_edits, find_directions, pick_target, strip_grid
from facelib.directions import apply_direction
from facelib.errors import InputError
from facelib.previews import DirectionPreview
from .conftest import make_small_generator


def test_directions_for_saves_once_and_reuses(tmp_path, single_thread):
    G = make_small_generator()
    d, path, loaded = directions_for(G, "sefa", rows="coarse", k=4, folder=tmp_path)
    assert not loaded and path.is_file() and len(d) == 4
    stamp = path.stat().st_mtime_ns
    d2, path2, loaded2 = directions_for(G, "sefa", rows="coarse", k=3, folder=tmp_path)
    assert loaded2 and path2 == path and path.stat().st_mtime_ns == stamp
    assert torch.equal(d2.vectors, d.vectors[:3])
    other = make_small_generator(seed=1)  # another generator: recomputed, not reused
    d3, path3, loaded3 = directions_for(other, "sefa", rows="coarse", k=3, folder=tmp_path)
    assert not loaded3 and not torch.allclose(d3.vectors, d.vectors[:3])
    assert path3 != path and path.stat().st_mtime_ns == stamp  # the first generator's file is kept
    assert set(find_directions(tmp_path, G=other)) == {path3.stem}
    assert set(find_directions(tmp_path, G=G)) == {path.stem}
    assert directions_for(other, "sefa", rows="coarse", k=3, folder=tmp_path)[1:] == (path3, True)
    with pytest.raises(InputError, match="fit"):
        directions_for(G, "fit", folder=tmp_path)


def test_strip_preview_and_export(tmp_path, single_thread):
    G = make_small_generator()
    name, target, note = pick_target(G, tmp_path / "none")
    assert name == "random_0" and "random" in note
    d, _, _ = directions_for(G, "pca", k=2, folder=tmp_path, samples=500)
    grid = strip_grid(G, target, d, sigmas=(-3, 0, 3), cell=32)
    assert grid.size[0] > 3 * 32
    preview = DirectionPreview(G, target, d, cell=32, label="SMOKE")
    w = preview.edited([2.0, 0.0], mask="0-2")
    expected = apply_direction(target, d[0], 2.0 * d[0].sigma, mask="0-2")
    assert torch.allclose(w, expected)
    assert preview([1.0, -1.0], None).size[0] >= 64
    with pytest.raises(InputError):
        preview.edited([1.0])
    grid, written = export_edits(G, target, d, [[0, 2.0], [1, -1.5, "coarse"]], tmp_path / "edits", cell=32,
                                 label="SMOKE")
    assert [p.name for p in written] == ["00_pca_0_+2.jpg", "01_pca_1_-1.5.jpg", "grid.jpg"]
    assert all(p.is_file() for p in written)
    with pytest.raises(InputError, match="out of range"):
        export_edits(G, target, d, [[5, 1.0]], tmp_path / "edits")


def test_direction_sliders_drive_the_preview(single_thread):
    pytest.importorskip("ipywidgets")
    from facelib.widgets import direction_sliders

    G = make_small_generator()
    box, get = direction_sliders(["a", "b"], G.n_latent)
    assert get() == {"strengths": [0.0, 0.0], "mask": [1.0] * G.n_latent}
    box.children[0].value = 1.5
    box.children[2].children[1].children[0].value = False
    got = get()
    assert got["strengths"] == [1.5, 0.0] and got["mask"][0] == 0.0 and sum(got["mask"]) == G.n_latent - 1
    shown = []
    from facelib.directions import Direction

    v = torch.nn.functional.normalize(torch.randn(2, G.style_dim), dim=1)
    preview = DirectionPreview(G, torch.zeros(G.n_latent, G.style_dim), [Direction(v[0], "sefa", "a"),
                                                                        Direction(v[1], "sefa", "b")], cell=32)
    preview.watch(shown.append, [box], get)
    assert len(shown) == 1  # drawn once at once
    box.children[1].value = -1.0
    assert len(shown) == 2 and shown[1].size == shown[0].size
    import numpy as np

    assert np.abs(np.asarray(shown[1], dtype=float) - np.asarray(shown[0], dtype=float)).mean() > 0.1
    with pytest.raises(InputError):
        direction_sliders([], 8)


def test_report_lists_direction_files_and_chosen_edits(tmp_path, single_thread):
    from facelib.report import build_report

    G = make_small_generator()
    out = tmp_path / "out"
    d, _, _ = directions_for(G, "sefa", rows="fine", k=2, folder=out / "directions")
    _, target, _ = pick_target(G, None)
    export_edits(G, target, d, [[0, 2.0]], out / "directions" / "edits", cell=32)
    rep = build_report(out)
    section = next(s for s in rep.sections if s.name == "06_directions")
    assert section.status == "ok" and section.n_images == 1
    md = rep.markdown.read_text()
    assert "`sefa_" in md and "sefa, 2 direction(s), rows [" in md
    assert "directions/edits/00_sefa_0_%2B2.jpg" in md or "directions/edits/00_sefa_0_+2.jpg" in md
