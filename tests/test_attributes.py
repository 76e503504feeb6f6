"""Landmark attributes on real photos, and the user-score CSV reader."""
from __future__ import annotations

import numpy as np
import pytest

from facelib.attributes import LANDMARK_ATTRIBUTES, landmark_attributes, measure_attributes, read_scores
from facelib.errors import InputError, ShapeError
from .conftest import shared_path


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("dlib")
    faces = shared_path("faces")
    # obama.jpg: broad open smile, teeth showing; biden.jpg: closed mouth, no smile;
    # obama_rot25.jpg: obama.jpg rotated 25 degrees in the image plane
    names = ["obama.jpg", "biden.jpg", "obama_rot25.jpg"]
    m = measure_attributes([str(faces / n) for n in names])
    return {n: {a: float(m.values[a][i]) for a in LANDMARK_ATTRIBUTES} for i, n in enumerate(names)}


@pytest.mark.slow
def test_open_smile_scores_higher_than_closed_mouth(photos):
    smile, closed = photos["obama.jpg"], photos["biden.jpg"]
    assert smile["smile"] > closed["smile"] + 0.2
    assert smile["mouth_open"] > 0.1 > abs(closed["mouth_open"])
    assert abs(smile["yaw"]) < 0.1 and 0.15 < smile["eyes_open"] < 0.45 and 0.15 < closed["eyes_open"] < 0.45


@pytest.mark.slow
def test_attributes_do_not_depend_on_in_plane_rotation(photos):
    a, b = photos["obama.jpg"], photos["obama_rot25.jpg"]
    for name in LANDMARK_ATTRIBUTES:
        assert abs(a[name] - b[name]) < 0.05, name


def test_landmark_attributes_on_synthetic_points():
    pts = np.zeros((68, 2))
    pts[36:42] = [[0, 0], [1, -1], [2, -1], [3, 0], [2, 1], [1, 1]]       # left eye, EAR 2/3
    pts[42:48] = pts[36:42] + [7, 0]                                       # right eye
    pts[27:36] = [5, 4]
    pts[30] = [5, 5.5]
    pts[48:60] = [4, 8]
    pts[48], pts[54] = [2, 8], [8, 8]
    pts[51], pts[57] = [5, 8], [5, 8]
    pts[60:68] = [5, 8]
    pts[[61, 62, 63], 1] = 7.5
    pts[[65, 66, 67], 1] = 9.0
    out = landmark_attributes(pts)
    d = 7.0
    assert out["eyes_open"][0] == pytest.approx(2 / 3)
    assert out["mouth_open"][0] == pytest.approx(1.5 / d)
    assert out["smile"][0] == pytest.approx(6 / d)
    lifted = pts.copy()
    lifted[[48, 54], 1] = 7.0                                              # corners up: more smile
    assert landmark_attributes(lifted)["smile"][0] == pytest.approx(6 / d + 1 / d)
    with pytest.raises(ShapeError):
        landmark_attributes(np.zeros((5, 2)))


def test_identity_needs_reference():
    import torch

    with pytest.raises(InputError, match="reference"):
        measure_attributes(torch.zeros(1, 3, 64, 64), ["identity"])
    with pytest.raises(InputError, match="unknown"):
        measure_attributes(torch.zeros(1, 3, 64, 64), ["age"])


def test_identity_similarity_with_a_small_network(single_thread):
    import torch

    from facelib.session import identity_network

    net = identity_network(None, smoke=True).net.eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    m = measure_attributes(images, ["identity"], reference=images[1:2], arcface=net)
    sim = m.values["identity"]
    assert m.skipped == 0 and sim.shape == (3,)
    assert sim[1] == pytest.approx(1.0, abs=1e-5) and sim[0] < 0.9999 and sim[2] < 0.9999


def test_read_scores(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("file,score\nphotos/anna.jpg, 0.5\n\n# comment\nben.png,2\n")
    assert read_scores(p) == {"anna": 0.5, "ben": 2.0}
    p.write_text("anna.jpg,abc\n")
    with pytest.raises(InputError, match="header|no file"):
        read_scores(p)
    p.write_text("a.jpg,1\nb.jpg,x\n")
    with pytest.raises(InputError, match=":2: value 'x'"):
        read_scores(p)
    p.write_text("a.jpg,1\na.png,2\n")
    with pytest.raises(InputError, match="twice"):
        read_scores(p)
    with pytest.raises(InputError, match="not found"):
        read_scores(tmp_path / "missing.csv")
