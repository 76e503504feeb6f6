"""Tensor <-> image conversion and the labelled grids: exact pixel values and exact sizes.

The grid geometry (``make_grid`` with ``pad=4``): a cell of side ``c`` takes ``c + 4`` px plus a
4 px border; column labels add a ``max(12, c // 14) + 8`` px band, a title as much per line,
captions ``max(12, c // 14) + 4`` px under every row, and row labels a left margin of
``len(longest label) * line * 6 // 10 + 8`` px.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import facelib
from facelib.grids import save_image, stamp, to_tensor

from .conftest import grid_cell, grid_size

WHITE, RED = (255, 255, 255), (200, 0, 0)


def _solid(rgb: tuple[int, int, int], size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def _px(im: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return im.convert("RGB").getpixel((x, y))


# ---------------------------------------------------------------------------- to_pil / to_tensor

def test_to_pil_maps_minus_one_to_one_onto_0_to_255() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 3.0, -7.0]).view(1, 1, 7).expand(3, 1, 7)
    im = facelib.to_pil(x)
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (7, 1)
    # (v + 1) * 127.5, rounded half to even; values outside [-1, 1] are clamped
    assert [im.getpixel((i, 0))[0] for i in range(7)] == [0, 64, 128, 191, 255, 255, 0]


def test_to_pil_keeps_width_height_and_channel_order() -> None:
    x = -torch.ones(2, 3, 5, 7)
    x[0, 0] = 1.0       # image 0: red
    x[1, 2, 4, 6] = 1.0  # image 1: one blue pixel, bottom right
    ims = facelib.to_pil(x)
    assert isinstance(ims, list) and len(ims) == 2
    assert all(im.size == (7, 5) for im in ims)  # PIL size is (width, height)
    assert (np.asarray(ims[0]) == (255, 0, 0)).all()
    assert ims[1].getpixel((6, 4)) == (0, 0, 255) and ims[1].getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("shape", [(5, 5), (1, 1, 4, 4), (2, 4, 4, 4), (1, 1, 3, 4, 4)])
def test_to_pil_rejects_other_shapes_naming_the_shape(shape) -> None:
    with pytest.raises(facelib.InputError, match=r"to_pil: expected \(N, 3, H, W\) or \(3, H, W\), got "
                                                   + __import__("re").escape(str(shape))):
        facelib.to_pil(torch.zeros(shape))


def test_to_tensor_round_trip_is_exact_on_the_uint8_grid() -> None:
    x = torch.randint(0, 256, (2, 3, 6, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    back = to_tensor(facelib.to_pil(x))
    assert back.shape == (2, 3, 6, 4) and back.dtype == torch.float32
    torch.testing.assert_close(back, x, atol=1e-6, rtol=0)
    # a size resizes (to a square) and grey stays grey
    grey = to_tensor(Image.new("L", (10, 20), 128), size=16)
    assert grey.shape == (1, 3, 16, 16)
    torch.testing.assert_close(grey, torch.full((1, 3, 16, 16), 128 / 127.5 - 1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- make_grid

def test_grid_without_labels_places_each_cell_exactly() -> None:
    colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(10, 20, 30), None, (250, 250, 0)]]
    rows = [[_solid(c) if c else None for c in row] for row in colours]
    grid = facelib.make_grid(rows, cell=16)
    assert grid.mode == "RGB" and grid.size == (3 * 20 + 4, 2 * 20 + 4)  # (64, 44)
    for i, row in enumerate(colours):
        for j, c in enumerate(row):
            x, y = 4 + j * 20, 4 + i * 20
            inside = {_px(grid, x + dx, y + dy) for dx in (0, 7, 15) for dy in (0, 9, 15)}
            assert inside == {c or WHITE}, (i, j)
            assert _px(grid, x - 1, y) == WHITE and _px(grid, x + 16, y + 15) == WHITE  # padding
    assert _px(grid, 63, 43) == WHITE


def test_grid_accepts_tensors_and_ragged_rows() -> None:
    t = -torch.ones(3, 4, 4)
    t[1] = 1.0  # green in [-1, 1]
    grid = facelib.make_grid([[t], [_solid((0, 0, 255)), t, None]], cell=8, pad=2)
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # the widest row sets the columns
    assert _px(grid, 2, 2) == (0, 255, 0) and _px(grid, 2, 12) == (0, 0, 255) and _px(grid, 12, 12) == (0, 255, 0)
    assert _px(grid, 12, 2) == WHITE and _px(grid, 22, 12) == WHITE


def test_grid_labels_captions_and_title_add_exact_margins() -> None:
    cell = 28  # line height max(12, 28 // 14) = 12
    rows = [[_solid((0, 0, 0))] * 2, [_solid((0, 0, 0))] * 2]
    grid = facelib.make_grid(rows, cell=cell, row_labels=["a", "abcd"], col_labels=["x", "y"],
                             captions=[["p", "q"], ["r", ""]], title="one\ntwo")
    left = 4 * 12 * 6 // 10 + 8      # 36: the longest row label has 4 characters
    head = 2 * (12 + 8)              # 40: two title lines
    top = 12 + 8                     # 20: the column labels
    cap = 12 + 4                     # 16: a caption line under every row
    assert grid.size == (left + 2 * (cell + 4) + 4, head + top + 2 * (cell + cap + 4) + 4) == (104, 160)
    layout = dict(row_labels=["a", "abcd"], col_labels=True, captions=True, title_lines=2)
    assert grid_size(2, 2, cell, **layout) == grid.size  # the helper other tests use agrees
    assert grid_cell(grid, 1, 1, cell, **layout).getbbox() is None  # all black: exactly the cell
    x0, y0 = left + 4, head + top + 4
    assert _px(grid, x0, y0) == (0, 0, 0) and _px(grid, x0 + cell - 1, y0 + cell - 1) == (0, 0, 0)
    assert _px(grid, x0 - 1, y0) == WHITE and _px(grid, x0, y0 - 1) == WHITE
    y1 = y0 + cell + cap + 4
    assert _px(grid, x0 + cell + 4, y1) == (0, 0, 0) and _px(grid, x0 + cell + 4, y1 - 1) == WHITE
    # the title is drawn in red, the labels and captions in black
    title_band = np.asarray(grid.crop((0, 0, grid.width, head))).astype(int)
    reddish = (title_band[..., 0] > 150) & (title_band[..., 1] < 60) & (title_band[..., 2] < 60)
    assert reddish.sum() > 10
    label_band = np.asarray(grid.crop((0, y0, left, y0 + cell)))
    caption_band = np.asarray(grid.crop((x0, y0 + cell, x0 + cell, y0 + cell + cap)))
    assert label_band.min() < 100 and caption_band.min() < 100


def test_grid_cells_are_resized_to_the_cell() -> None:
    checker = Image.fromarray(np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((20, 20), np.uint8)))
    grid = facelib.make_grid([[checker]], cell=10, pad=0)
    assert grid.size == (10, 10)
    assert _px(grid, 1, 1) == (0, 0, 0) and _px(grid, 8, 1) == WHITE and _px(grid, 8, 8) == (0, 0, 0)


def test_empty_grid_is_a_blank_padding_square() -> None:
    grid = facelib.make_grid([], cell=16)
    assert grid.size == (4, 4) and (np.asarray(grid) == 255).all()


# ---------------------------------------------------------------------------- stamp / save_image

@pytest.mark.parametrize(("size", "text", "band"), [((64, 48), "x", 24), ((1200, 30), "UNTRAINED", 46)])
def test_stamp_adds_a_red_band_above_and_covers_nothing(size, text, band) -> None:
    """A one-line band is max(18, width // 30) + 6 px high; the image is kept unchanged below it."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = stamp(image, text)
    assert out.mode == "RGB" and out.size == (size[0], size[1] + band)
    assert np.array_equal(np.asarray(out)[band:], np.asarray(image))
    banner = np.asarray(out)[:band]
    assert tuple(banner[0, 0]) == RED and tuple(banner[-1, -1]) == RED
    assert (banner[..., 1] > 100).any()  # white (anti-aliased) text on the red
    assert not (np.asarray(stamp(image, ""))[:band] != RED).any()  # no text: only red


def test_stamp_converts_grey_images() -> None:
    out = stamp(Image.new("L", (40, 10), 77), "x")
    assert out.mode == "RGB" and out.size == (40, 34) and out.getpixel((39, 33)) == (77, 77, 77)


def test_save_image_writes_tensors_and_images_atomically(tmp_path) -> None:
    t = torch.linspace(-1, 1, 3 * 4 * 5).view(3, 4, 5)
    save_image(t, tmp_path / "t.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "t.png")), np.asarray(facelib.to_pil(t)))
    save_image(_solid((1, 2, 3), 6), tmp_path / "sub" / "s.png")
    assert Image.open(tmp_path / "sub" / "s.png").getpixel((5, 5)) == (1, 2, 3)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["s.png", "sub", "t.png"]  # no temporary files
