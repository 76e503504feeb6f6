"""facelib.paste and the alignment sidecars: edits go back into the photo, and only inside the face."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import facelib
from facelib.align_batch import align_folder, alignment_path, load_alignment, save_alignment
from facelib.errors import InputError
from facelib.paste import paste_file, paste_into_photo, seam_color_offset


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    folder = tmp_path_factory.mktemp("photo")
    photo = folder / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    try:
        face = facelib.align_faces(photo, output_size=256)[0]
    except facelib.DependencyError as e:
        pytest.skip(str(e))
    return photo, face


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def _support(face, photo) -> np.ndarray:
    """Photo pixels the pasted face can touch: the warped mask of a white square on black."""
    black = Image.new("RGB", Image.open(photo).size)
    white = Image.new("RGB", face.image.size, (255, 255, 255))
    mask = face.mask(face.output_size, feather=0.02 * face.output_size).numpy()
    return np.asarray(face.paste_back(white, black, mask=mask))[..., 0] > 0


def test_unedited_crop_round_trip_is_exact_outside_and_close_inside(astronaut):
    photo, face = astronaut
    orig = np.asarray(Image.open(photo).convert("RGB"))
    out = np.asarray(paste_into_photo(face.image, face, photo))
    inside = _support(face, photo)
    assert 0.005 < inside.mean() < 0.5
    assert np.array_equal(out[~inside], orig[~inside])  # byte-identical outside the feathered mask
    assert _psnr(out[inside], orig[inside]) > 30.0  # only resampling loss inside


def test_an_edit_changes_only_the_inside(astronaut):
    photo, face = astronaut
    orig = np.asarray(Image.open(photo).convert("RGB"))
    edited = Image.fromarray(255 - np.asarray(face.image))  # a drastic edit: inverted colours
    out = np.asarray(paste_into_photo(edited, face, photo, color_match=False))
    inside = _support(face, photo)
    changed = np.any(out != orig, axis=-1)
    assert not np.any(changed & ~inside)
    assert changed[inside].mean() > 0.5


def test_colour_matching_removes_a_global_shift(astronaut):
    photo, face = astronaut
    arr = np.asarray(face.image).astype(np.int16)
    shifted = Image.fromarray(np.clip(arr + np.array([40, -30, 20]), 0, 255).astype(np.uint8))
    orig = np.asarray(Image.open(photo).convert("RGB"))
    inside = _support(face, photo)
    plain = np.asarray(paste_into_photo(shifted, face, photo, color_match=False))
    matched = np.asarray(paste_into_photo(shifted, face, photo, color_match=True))
    assert _psnr(matched[inside], orig[inside]) > _psnr(plain[inside], orig[inside]) + 6
    off = seam_color_offset(np.asarray(shifted, float), arr.astype(float), face.mask(256, feather=5).numpy())
    np.testing.assert_allclose(off, [-40, 30, -20], atol=4)


def test_align_folder_writes_geometry_and_paste_file_uses_it(astronaut, tmp_path):
    photo, face = astronaut
    src = tmp_path / "photos" / "ann"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(photo.read_bytes())
    r = align_folder(tmp_path / "photos", tmp_path / "aligned", output_size=128, progress=False, layout="mirror")
    crop = tmp_path / "aligned" / "ann" / "a.png"
    assert r.written == (crop,)
    meta = json.loads(alignment_path(crop).read_text())
    assert meta["format"] == "facelib.alignment" and len(meta["quad"]) == 4
    back = load_alignment(crop)
    assert back.source == str((src / "a.png").resolve()) and back.output_size == 128
    np.testing.assert_allclose(back.quad, face.quad, atol=1e-6)
    edited = torch.zeros(3, 64, 64)  # a generator-side tensor edit at another size
    out = paste_file(edited, crop, tmp_path / "out" / "a.photo.png")
    assert Image.open(out).size == Image.open(photo).size


def test_missing_geometry_and_photo_are_named(tmp_path, astronaut):
    _, face = astronaut
    crop = tmp_path / "x.png"
    face.image.save(crop)
    with pytest.raises(InputError, match="align"):
        load_alignment(crop)
    save_alignment(dataclasses.replace(face, source="gone.png"), crop)  # no photo recorded, name not found
    with pytest.raises(InputError, match="photo"):
        paste_into_photo(face.image, crop)
