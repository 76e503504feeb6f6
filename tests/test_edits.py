"""W+ edits: row masks, style mixing, expression deltas, row effects, tables and the mix/express commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import facelib
from facelib import edit_inputs, edits, face_regions, latents, previews, tables
from facelib.edits import LayerMask, apply_delta, expression_delta, mix_styles
from facelib.row_measure import row_effects
from facelib.grids import to_pil

from .conftest import grid_cell, grid_size, title_lines

L, D = 18, 8


def _w(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- masks

def test_parse_rows_and_ranges():
    assert LayerMask.parse("9-17", 18).rows == tuple(range(9, 18))
    assert LayerMask.parse("0,2,4-6", 18).rows == (0, 2, 4, 5, 6)
    assert LayerMask.parse(" 3 , 1-2 ;7", 8).rows == (1, 2, 3, 7)
    assert LayerMask.parse("", 8).rows == ()
    assert LayerMask.parse("none", 8).rows == ()
    assert LayerMask.parse("all", 14).rows == tuple(range(14))
    assert LayerMask.parse("0,fine", 14).rows == (0,) + tuple(range(8, 14))
    assert LayerMask.parse("4-6", 8).weights == (0, 0, 0, 0, 1, 1, 1, 0)
    assert str(LayerMask.parse("0,2,4-6,9", 18)) == "0,2,4-6,9"


@pytest.mark.parametrize("text, error", [("9-", facelib.InputError), ("a-b", facelib.InputError),
                                         ("17-9", facelib.InputError), ("-1", facelib.RangeError),
                                         ("9-18", facelib.RangeError), ("fancy", facelib.InputError)])
def test_parse_errors(text, error):
    with pytest.raises(error):
        LayerMask.parse(text, 18)


def test_rows_beyond_n_latent_name_the_rows():
    with pytest.raises(facelib.RangeError, match=r"rows 14-17 do not exist.*14 W\+ rows"):
        LayerMask.parse("9-17", 14)
    with pytest.raises(facelib.RangeError):
        LayerMask.from_rows([3, 20], 18)
    with pytest.raises(ValueError):  # facelib errors are ValueErrors for callers that catch those
        mix_styles(_w(14, D), _w(14, D, seed=1), rows=range(9, 18))


@pytest.mark.parametrize("n, coarse, middle, fine, style, expression", [
    (18, "0-3", "4-7", "8-17", "9-17", "1-17"),
    (16, "0-3", "4-7", "8-15", "9-15", "1-15"),
    (14, "0-3", "4-7", "8-13", "9-13", "1-13"),
])
def test_presets_scale_with_the_generator(n, coarse, middle, fine, style, expression):
    got = {p: str(LayerMask.preset(p, n)) for p in ("coarse", "middle", "fine", "style", "expression")}
    assert got == {"coarse": coarse, "middle": middle, "fine": fine, "style": style, "expression": expression}
    assert LayerMask.preset("all", n).rows == tuple(range(n))
    assert LayerMask.preset("none", n).rows == ()
    # the bands partition the rows
    bands = edits.row_bands(n)
    assert sorted(r for b in bands.values() for r in b) == list(range(n))


@pytest.mark.parametrize("n", [4, 6, 8, 10, 12])
def test_small_generators_get_non_empty_bands(n):
    for name in ("coarse", "middle", "fine", "style"):
        assert LayerMask.preset(name, n).rows, (name, n)
    assert set(LayerMask.preset("style", n).rows) <= set(LayerMask.preset("fine", n).rows)


def test_scaled_weights_resample_by_area():
    half = LayerMask(tuple([0.0] * 8 + [0.5] * 10))
    out = LayerMask.scaled(half, 14)
    assert out.weights == (0.0,) * 8 + (0.5,) * 6
    assert LayerMask.scaled("9-17", 18) == LayerMask.parse("9-17", 18)


def test_coerce_forms():
    n = 10
    rows = LayerMask.from_rows([1, 3], n)
    assert LayerMask.coerce([1, 3], n) == rows
    assert LayerMask.coerce(range(1, 4, 2), n) == rows
    assert LayerMask.coerce(torch.tensor([1, 3]), n) == rows
    assert LayerMask.coerce(np.array([1, 3]), n) == rows
    assert LayerMask.coerce("1,3", n) == rows
    vec = [0.0, 1.0, 0.0, 1.0] + [0.0] * 6
    assert LayerMask.coerce(vec, n) == rows
    assert LayerMask.coerce(torch.tensor(vec), n) == rows
    assert LayerMask.coerce([bool(v) for v in vec], n) == rows
    assert LayerMask.coerce(None, n).rows == tuple(range(n))
    with pytest.raises(facelib.ShapeError):
        LayerMask.coerce([0.5, 1.0], n)
    with pytest.raises(facelib.ShapeError):
        LayerMask.coerce(LayerMask.preset("fine", 18), n)
    with pytest.raises(facelib.RangeError):
        LayerMask(tuple([1.5] + [0.0] * 9))
    with pytest.raises(facelib.InputError):
        LayerMask.coerce({"rows": 3}, n)


def test_mask_algebra():
    a, b = LayerMask.parse("0-3", 8), LayerMask.parse("2-5", 8)
    assert (a | b).rows == tuple(range(6))
    assert (a & b).rows == (2, 3)
    assert (~a).rows == (4, 5, 6, 7)
    assert a.without([0]).rows == (1, 2, 3)


# ---------------------------------------------------------------------------- mixing

def test_mix_styles_exact_row_semantics():
    c, s = _w(L, D), _w(L, D, seed=1)
    out = mix_styles(c, s)  # default: rows 9-17 of an 18-row latent (the report's range(9, 18))
    assert torch.equal(out[9:], s[9:]) and torch.equal(out[:9], c[:9])
    out = mix_styles(c, s, rows=[0, 5])
    for r in range(L):
        assert torch.equal(out[r], s[r] if r in (0, 5) else c[r])


def test_mix_styles_strength_interpolates_listed_rows_only():
    c, s = _w(L, D), _w(L, D, seed=1)
    out = mix_styles(c, s, rows="4-7", strength=0.25)
    torch.testing.assert_close(out[4:8], c[4:8] + 0.25 * (s[4:8] - c[4:8]))
    assert torch.equal(out[:4], c[:4]) and torch.equal(out[8:], c[8:])
    assert torch.equal(mix_styles(c, s, rows="all", strength=0.0), c)
    weights = [0.0] * L
    weights[2] = 0.5
    torch.testing.assert_close(mix_styles(c, s, rows=weights)[2], (c[2] + s[2]) / 2)


def test_mix_styles_batches_and_broadcasts():
    c, s = _w(3, L, D), _w(L, D, seed=1)
    out = mix_styles(c, s, rows="fine")
    assert out.shape == (3, L, D)
    assert torch.equal(out[:, 8:], s[8:].expand(3, -1, -1))
    out = mix_styles(c[0], _w(4, L, D, seed=2), rows="coarse")  # one content, four styles
    assert out.shape == (4, L, D)
    assert mix_styles(c, _w(3, L, D, seed=3)).shape == (3, L, D)


def test_mix_styles_default_on_smaller_generators():
    c, s = _w(14, D), _w(14, D, seed=1)
    out = mix_styles(c, s)
    assert torch.equal(out[9:], s[9:]) and torch.equal(out[:9], c[:9])
    c, s = _w(10, D), _w(10, D, seed=1)  # 64 px: the fine band is rows 8-9
    assert torch.equal(mix_styles(c, s)[8:], s[8:])


@pytest.mark.parametrize("content, style", [((L, D), (L, D + 1)), ((L, D), (14, D)), ((2, L, D), (3, L, D)),
                                            ((L,), (L,)), ((1, 2, L, D), (L, D))])
def test_mix_styles_shape_errors(content, style):
    with pytest.raises(facelib.ShapeError):
        mix_styles(torch.zeros(content), torch.zeros(style))


def test_edits_do_not_modify_inputs():
    c, s, d = _w(2, L, D), _w(L, D, seed=1), _w(L, D, seed=2)
    copies = [t.clone() for t in (c, s, d)]
    out = mix_styles(c, s, rows="all")
    out += 1
    out = apply_delta(c, d, mask="all")
    out += 1
    expression_delta(c, s[None].repeat(2, 1, 1))
    for t, ref in zip((c, s, d), copies):
        assert torch.equal(t, ref)


def test_bad_strength():
    for bad in (float("nan"), float("inf"), "1", True):
        with pytest.raises(facelib.RangeError):
            mix_styles(_w(L, D), _w(L, D), strength=bad)


# ---------------------------------------------------------------------------- expressions

def test_expression_delta_averages_pairs():
    neutral, emotion = _w(3, L, D), _w(3, L, D, seed=1)
    delta = expression_delta(neutral, emotion)
    torch.testing.assert_close(delta, sum(emotion[i] - neutral[i] for i in range(3)) / 3)
    assert delta.shape == (L, D)
    # one pair == the plain difference; lists are concatenated
    torch.testing.assert_close(expression_delta(neutral[0], emotion[0]), emotion[0] - neutral[0])
    torch.testing.assert_close(expression_delta([neutral[0], neutral[1:]], list(emotion)), delta)
    # unequal counts: difference of the means
    torch.testing.assert_close(expression_delta(neutral[:1], emotion), emotion.mean(0) - neutral[0])
    with pytest.raises(facelib.ShapeError):
        expression_delta(neutral, _w(3, L, D + 1))
    with pytest.raises(facelib.InputError):
        expression_delta([], emotion)


def test_apply_delta_masked_rows_only():
    t, d = _w(L, D), _w(L, D, seed=1)
    out = apply_delta(t, d, mask="1-17", strength=0.7)
    assert torch.equal(out[0], t[0])
    torch.testing.assert_close(out[1:], t[1:] + 0.7 * d[1:])
    out = apply_delta(t, d)  # default: the expression mask drops row 0
    assert torch.equal(out[0], t[0]) and not torch.equal(out[1], t[1])
    out = apply_delta(t, d, mask="happy")
    assert torch.equal(out, apply_delta(t, d, mask=edits.EXPRESSION_MASKS["happy"]))
    out = apply_delta(t, d, mask=[0.0, 0.5] + [0.0] * (L - 2))
    torch.testing.assert_close(out[1], t[1] + 0.5 * d[1])
    assert torch.equal(out[2:], t[2:])


def test_strength_zero_is_the_identity():
    t, d, s = _w(2, L, D), _w(L, D, seed=1), _w(L, D, seed=2)
    assert torch.equal(apply_delta(t, d, mask="all", strength=0.0), t)
    assert torch.equal(mix_styles(t, s, rows="all", strength=0.0), t)


def test_apply_delta_shapes():
    t = _w(4, L, D)
    assert apply_delta(t, _w(L, D)).shape == (4, L, D)
    assert apply_delta(t, _w(4, L, D)).shape == (4, L, D)
    with pytest.raises(facelib.ShapeError):
        apply_delta(t, _w(3, L, D))
    with pytest.raises(facelib.ShapeError):
        apply_delta(t, _w(16, D))
    with pytest.raises(facelib.InputError):
        apply_delta(t, "delta")


def test_expression_masks_presets_follow_the_report():
    for emotion in ("happy", "sad", "fear"):
        mask = LayerMask.preset(emotion, 18)
        assert 0 not in mask.rows  # the report's artefact row (lighting, glasses)
        assert mask.rows == tuple(range(1, 18))


# ---------------------------------------------------------------------------- row effects

def test_row_effects_one_row_delta(small_generator):
    G = small_generator
    t = edit_inputs.random_latents(G, 1)[0]
    delta = torch.zeros(G.n_latent, G.style_dim)
    delta[5] = 2.0 * _w(G.style_dim, seed=4)
    fx = row_effects(G, t, delta=delta, progress=False)
    assert fx.kind == "delta" and fx.n_latent == G.n_latent
    for r in range(G.n_latent):
        if r == 5:
            assert fx.inside[r] > 1e-3 and fx.outside[r] > 1e-4 and fx.colour[r] >= 0
        else:
            assert fx.inside[r] == fx.outside[r] == fx.colour[r] == 0.0
            assert torch.equal(fx.thumbnails[r], fx.base)
    # the all-rows edit is the single-row edit here
    assert fx.full == pytest.approx((fx.inside[5], fx.outside[5], fx.colour[5]), rel=1e-5, abs=1e-7)
    assert "ellipse" in fx.region_source  # no face on an untrained generator's rendering
    assert fx.suggest_mask(0.1, min_locality=0).rows == (5,)


def test_row_effects_match_direct_rendering(small_generator):
    G = small_generator
    t = edit_inputs.random_latents(G, 1, seed=1)[0]
    delta = _w(G.n_latent, G.style_dim, seed=2)
    region = torch.zeros(G.resolution, G.resolution)
    region[8:24, 10:22] = 1.0
    fx = row_effects(G, t, delta=delta, strength=0.5, mask_region=region, batch_size=3, progress=False)
    assert fx.region_source == "given mask"
    assert all(v > 0 for v in fx.inside)
    with torch.no_grad():
        base = G.synthesis(t[None]).clamp(-1, 1)
        for r in (0, 4, G.n_latent - 1):
            img = G.synthesis(apply_delta(t, delta, mask=[r], strength=0.5)[None]).clamp(-1, 1)
            diff = (img - base).abs().mean(1)[0] / 2
            inside = float((diff * region).sum() / region.sum())
            outside = float((diff * (1 - region)).sum() / (1 - region).sum())
            colour = float((img.mean((2, 3)) - base.mean((2, 3))).norm() / 2)
            assert fx.inside[r] == pytest.approx(inside, rel=1e-4, abs=1e-6)
            assert fx.outside[r] == pytest.approx(outside, rel=1e-4, abs=1e-6)
            assert fx.colour[r] == pytest.approx(colour, rel=1e-4, abs=1e-6)
    marked = fx.suggest_mask(0.2, min_locality=0)
    fig = fx.plot(mask=marked)
    # two bars per row (inside / outside) above, one (colour) below, plus a shaded span per marked row
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 2 * G.n_latent + len(marked.rows)
    assert len(fig.axes[1].patches) == G.n_latent + len(marked.rows)
    # the table: target, face region, all rows, then one cell per row, 10 to a line, captioned, titled
    grid = fx.grid(title="t")
    assert grid.size == grid_size(2, 10, 96, captions=True, title_lines=1) == (1004, 256)
    first = grid_cell(grid, 0, 0, 96, captions=True, title_lines=1)
    assert np.array_equal(np.asarray(first), np.asarray(to_pil(fx.base).resize((96, 96), Image.Resampling.LANCZOS)))
    assert "row" in fx.summary()
    assert json.loads(json.dumps(fx.to_dict())) == {
        "kind": "delta", "strength": 0.5, "region_source": "given mask", "inside": list(fx.inside),
        "outside": list(fx.outside), "colour": list(fx.colour), "full": list(fx.full), "skipped": []}


def test_row_effects_style_rows_where_mask_is_zero(small_generator):
    G = small_generator
    t = edit_inputs.random_latents(G, 1, seed=1)[0]
    style = t.clone()
    style[2:4] = edit_inputs.random_latents(G, 1, seed=7)[0, 2:4]  # the style differs on rows 2-3 only
    fx = row_effects(G, t, style_wplus=style, mask_region="ellipse", progress=False)
    assert fx.kind == "style"
    assert set(fx.skipped) == set(range(G.n_latent)) - {2, 3}
    assert all(fx.inside[r] == 0 and fx.outside[r] == 0 for r in fx.skipped)
    assert fx.inside[2] > 0 and fx.inside[3] > 0


def test_row_effects_errors(small_generator):
    G = small_generator
    t = edit_inputs.random_latents(G, 1)[0]
    with pytest.raises(facelib.InputError):
        row_effects(G, t, progress=False)
    with pytest.raises(facelib.InputError):
        row_effects(G, t, delta=t, style_wplus=t, progress=False)
    with pytest.raises(facelib.ShapeError):
        row_effects(G, torch.zeros(18, 512), delta=torch.zeros(18, 512), progress=False)
    with pytest.raises(facelib.InputError):
        row_effects(G, t, delta=t, mask_region=torch.zeros(8, 8), progress=False)


def test_face_region_fallback_and_landmarks():
    mask, source = face_regions.face_region(torch.zeros(3, 64, 64), 64)
    assert "ellipse" in source and mask.shape == (64, 64)
    assert 0.2 < float(mask.mean()) < 0.3  # about the area of a landmark hull on FFHQ crops
    from .conftest import shared_path

    photo = shared_path("faces", "obama.jpg")
    face = facelib.align_faces(photo, output_size=256)[0]
    mask, source = face_regions.face_region(face.image, 128)
    assert source.startswith("landmarks")
    ref = face.mask(128)
    inter = float((mask * ref).sum())
    union = float(torch.maximum(mask, ref).sum())
    assert inter / union > 0.85  # re-detected on the aligned crop, the hull is nearly the same


# ---------------------------------------------------------------------------- tables

def test_style_and_expression_tables(small_generator, tmp_path):
    G = small_generator
    contents = edit_inputs.random_latents(G, 2, seed=1)
    styles = {"a": edit_inputs.random_latents(G, 1, seed=2), "b": edit_inputs.random_latents(G, 1, seed=3)}
    table = tables.style_table(G, contents, styles, rows="fine", progress=False)
    assert table.mixed_images.shape == (2, 2, 3, G.resolution, G.resolution)
    assert table.style_names == ("a", "b")
    with torch.no_grad():
        expect = G.synthesis(mix_styles(contents[1], styles["b"][0], rows="fine")[None]).clamp(-1, 1)
    torch.testing.assert_close(table.mixed_images[1, 1], expect[0], atol=1e-5, rtol=0)
    grid = table.grid(cell=32, title="t")
    layout = dict(row_labels=["style (projection)", *table.content_names], col_labels=True, title_lines=1)
    assert grid.size == grid_size(3, 3, 32, **layout)  # the styles' row, then a row per content
    assert np.array_equal(np.asarray(grid_cell(grid, 2, 2, 32, **layout)),
                          np.asarray(to_pil(table.mixed_images[1, 1]).resize((32, 32), Image.Resampling.LANCZOS)))
    files = table.save_images(tmp_path / "styles")
    assert {p.name for p in files} >= {"a_style.jpg", "transferred_a.jpg", "transferred_b_contents_1.jpg"}

    refs = {e: edit_inputs.random_latents(G, 2, seed=10 + k) for k, e in enumerate(("happy", "sad"))}
    neutral = edit_inputs.random_latents(G, 2, seed=20)
    ex = tables.expression_table(G, contents[:1], neutral, refs, progress=False)
    assert ex.edited_images.shape == (1, 2, 3, G.resolution, G.resolution)
    torch.testing.assert_close(ex.deltas[0], expression_delta(neutral, refs["happy"]))
    assert torch.equal(ex.edited_wplus[0, 0], apply_delta(contents[0], ex.deltas[0], mask="happy"))
    assert torch.equal(ex.unmasked_wplus[0, 1], apply_delta(contents[0], ex.deltas[1], mask="all"))
    grid = ex.grid(cell=32, unmasked=True, title="t")
    name = ex.target_names[0]
    layout = dict(row_labels=["projection", name, f"{name}, no mask"], col_labels=True, title_lines=1)
    assert grid.size == grid_size(3, 3, 32, **layout)  # projections, the target masked, then unmasked
    assert np.array_equal(np.asarray(grid_cell(grid, 2, 2, 32, **layout)),
                          np.asarray(to_pil(ex.unmasked_images[0, 1]).resize((32, 32), Image.Resampling.LANCZOS)))
    grid = ex.comparison_grid(cell=32, title="t")
    layout = dict(row_labels=["happy", "sad"], col_labels=True, captions=True, title_lines=1)
    assert grid.size == grid_size(2, 3, 32, **layout) == (156, 148)  # per emotion: target, no mask, masked
    assert np.array_equal(np.asarray(grid_cell(grid, 1, 2, 32, **layout)),
                          np.asarray(to_pil(ex.edited_images[0, 1]).resize((32, 32), Image.Resampling.LANCZOS)))
    names = {p.name for p in ex.save_images(tmp_path / "expr")}
    assert {"neutral.jpg", "happy.jpg", "target.jpg", "transferred_sad.jpg",
            "transferred_sad_unmasked.jpg"} <= names


def test_previews(small_generator):
    G = small_generator
    w = edit_inputs.random_latents(G, 3)
    mix = previews.MixPreview(G, w[:1], w[1:2], cell=32)
    img = mix(rows=(4, 7), strength=0.5)
    layout = dict(row_labels=["style", "transferred"], col_labels=True)
    layout["title_lines"] = title_lines(img, 2, 32, **layout)  # the title: one line or more
    assert isinstance(img, Image.Image) and img.size == grid_size(2, 2, 32, **layout)
    assert img.width == 163 and layout["title_lines"] >= 1
    assert grid_cell(img, 0, 0, 32, **layout).getextrema() == ((255, 255),) * 3  # no style above the content
    assert not np.array_equal(np.asarray(grid_cell(img, 1, 1, 32, **layout)),
                              np.asarray(grid_cell(img, 1, 0, 32, **layout)))
    img = mix(rows=(4, 7), strength=0.0)  # nothing taken from the style: the content itself
    assert np.array_equal(np.asarray(grid_cell(img, 1, 1, 32, **layout)), np.asarray(grid_cell(img, 1, 0, 32, **layout)))
    preview = previews.DeltaPreview(G, w[:1], {"a": w[1] - w[0], "b": w[2] - w[0]}, cell=32)
    img = preview(mask=[0.0, 1.0] + [0.0] * (G.n_latent - 2), strength=1.0)
    layout = dict(row_labels=["a", "b"], col_labels=True, title_lines=1)  # "strength 1" fits on one line
    assert isinstance(img, Image.Image) and img.size == grid_size(2, 3, 32, **layout) == (127, 116)
    assert np.array_equal(np.asarray(grid_cell(img, 0, 0, 32, **layout)), np.asarray(grid_cell(img, 1, 0, 32, **layout)))
    with pytest.raises(facelib.ShapeError):
        preview(mask=[1.0, 0.0])


class _FakeWidget:
    """Stands in for an ipywidgets value widget: records observers, changes value on demand."""

    def __init__(self, value):
        self.value, self.observers = value, []

    def observe(self, fn, names=None):
        self.observers.append(fn)

    def set(self, value):
        self.value = value
        for fn in self.observers:
            fn({"new": value})


class _FakeBox:
    def __init__(self, children):
        self.children = children


def test_preview_watch_rerenders_on_change(small_generator):
    G = small_generator
    w = edit_inputs.random_latents(G, 2)
    preview = previews.MixPreview(G, w[:1], w[1:], cell=32)
    slider, strength = _FakeWidget((4, 7)), _FakeWidget(1.0)
    shown = []
    preview.watch(shown.append, [_FakeBox([slider]), strength], rows=lambda: slider.value,
                  strength=lambda: strength.value)
    assert len(shown) == 1 and len(slider.observers) == 1 and len(strength.observers) == 1
    strength.set(0.0)
    assert len(shown) == 2
    assert np.array_equal(np.asarray(shown[1]), np.asarray(preview(rows=(4, 7), strength=0.0)))
    assert not np.array_equal(np.asarray(shown[1]), np.asarray(shown[0]))
    slider.set((3, 99))  # a bad row range is reported in place of the image
    assert isinstance(shown[-1], str) and "do not exist" in shown[-1]


# ---------------------------------------------------------------------------- command line

def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _expected(G, wplus, noises=None) -> np.ndarray:
    from facelib.grids import to_pil

    with torch.no_grad():
        return np.asarray(to_pil(G.synthesis(wplus, noise=noises)[0]), dtype=np.int16)


def test_cli_mix_and_express_round_trip(small_generator, tmp_path, capsys):
    from facelib.cli import main
    from facelib.weights import load_generator, save_generator

    weights = tmp_path / "G.pt"
    save_generator(small_generator, weights)
    G = load_generator(weights)
    lat = edit_inputs.random_latents(G, 4, seed=5)
    content, style = lat[0], lat[1]
    torch.save({"wplus": content[None]}, tmp_path / "content.pt")
    torch.save(style, tmp_path / "style.pt")  # a bare (n_latent, D) tensor

    out = tmp_path / "mixed.png"
    assert main(["mix", str(tmp_path / "content.pt"), str(tmp_path / "style.pt"), str(out), "--rows", "4-7",
                 "--strength", "1.0", "--weights", str(weights), "--device", "cpu"]) == 0
    rows = LayerMask.scaled("4-7", G.n_latent)  # the report's 18-row terms, as in the notebooks
    expect_w = mix_styles(content, style, rows=rows)
    assert np.abs(_png(out) - _expected(G, expect_w[None])).max() <= 1
    saved = latents.load_latents(out.with_suffix(".pt"))
    assert torch.equal(saved.wplus[0], expect_w)
    meta = json.loads((tmp_path / "mixed.edit.json").read_text())
    assert meta["rows"] == str(rows) and meta["weights_sha256"] == G.weights_sha256

    # chain: express on the mixed latent; the generator is found from the recorded weights path
    torch.save({"wplus": lat[2:4]}, tmp_path / "neutral.pt")
    torch.save({"wplus": lat[[3, 0]]}, tmp_path / "happy.pt")
    out2 = tmp_path / "happy.png"
    assert main(["express", str(out.with_suffix(".pt")), str(tmp_path / "neutral.pt"), str(tmp_path / "happy.pt"),
                 str(out2), "--mask", "1-7", "--strength", "0.8"]) == 0
    delta = ((lat[3] - lat[2]) + (lat[0] - lat[3])) / 2
    expect2 = apply_delta(expect_w, delta, mask=LayerMask.scaled("1-7", G.n_latent), strength=0.8)
    assert torch.allclose(latents.load_latents(out2.with_suffix(".pt")).wplus[0], expect2, atol=1e-6)
    assert np.abs(_png(out2) - _expected(G, expect2[None])).max() <= 1
    capsys.readouterr()

    # a saved Projection: its noise maps are used for the rendering
    from facelib.projection import project

    proj = project(G, G.synthesis(lat[:1]).clamp(-1, 1), steps=2, lpips=None, mse_weight=1.0, progress=False)
    proj.save(tmp_path / "proj.pt")
    out3 = tmp_path / "proj_mix.png"
    assert main(["mix", str(tmp_path / "proj.pt"), str(tmp_path / "style.pt"), str(out3), "--rows", "fine",
                 "--weights", str(weights)]) == 0
    expect3 = mix_styles(proj.wplus, style, rows="fine")
    assert np.abs(_png(out3) - _expected(G, expect3, proj.noises)).max() <= 1

    # errors: rows beyond the report's 18, unknown generator, not a latent file
    assert main(["mix", str(tmp_path / "content.pt"), str(tmp_path / "style.pt"), str(tmp_path / "x.png"),
                 "--rows", "9-20", "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "do not exist" in err and "--rows" in err
    assert main(["mix", str(tmp_path / "content.pt"), str(tmp_path / "style.pt"), str(tmp_path / "x.png")]) == 1
    assert "--weights" in capsys.readouterr().err
    torch.save({"something": torch.zeros(3)}, tmp_path / "bad.pt")
    assert main(["mix", str(tmp_path / "bad.pt"), str(tmp_path / "style.pt"), str(tmp_path / "x.png"),
                 "--weights", str(weights)]) == 1
    assert "no W+ latents" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_find_projections_and_inputs(small_generator, tmp_path):
    from facelib.projection import project

    G = small_generator
    lat = edit_inputs.random_latents(G, 2, seed=3)
    proj = project(G, G.synthesis(lat).clamp(-1, 1), steps=1, lpips=None, mse_weight=1.0, progress=False)
    proj.select(0).save(tmp_path / "latents" / "ann" / "0.pt")
    proj.select(1).save(tmp_path / "latents" / "bob" / "0.pt")
    torch.save({"wplus": lat}, tmp_path / "latents" / "stray.pt")  # no sidecar: not a projection folder entry
    found = edit_inputs.find_projections(tmp_path / "latents", G=G)
    assert list(found) == ["ann/0", "bob/0"]
    other = facelib.StyleGAN2Generator(32, style_dim=32, n_mlp=2, channel_max=32, seed=0)
    assert edit_inputs.find_projections(tmp_path / "latents", G=other) == {}

    inp = edit_inputs.style_inputs(G, latents_dir=tmp_path / "latents", styles_dir=tmp_path / "none", progress=False)
    assert list(inp.targets) == ["ann/0"] and list(inp.references["styles"]) == ["bob/0"]
    assert not inp.stand_ins
    inp = edit_inputs.expression_inputs(G, latents_dir=tmp_path / "nothing", expressions_dir=tmp_path / "none",
                                        progress=False)
    assert inp.stand_ins and list(inp.references) == list(edits.EMOTIONS)
    assert any("meaningless" in n for n in inp.notes)


def test_reference_photos_are_aligned_projected_and_reused(small_generator, tmp_path):
    import shutil

    from facelib.data import locate

    from .conftest import shared_path

    G = small_generator
    faces = shared_path("faces")
    root = tmp_path / "expressions"
    (root / "neutral").mkdir(parents=True)
    (root / "Happy").mkdir()  # folder names are matched case-insensitively
    shutil.copy(faces / "obama-240p.jpg", root / "neutral" / "a.jpg")
    shutil.copy(faces / "obama-240p.jpg", root / "Happy" / "b.jpg")
    Image.new("RGB", (300, 200), (90, 120, 200)).save(root / "Happy" / "c.png")  # no face: centre-cropped
    assert edit_inputs.reference_dir(None, role="expressions", inventory=locate([tmp_path])) == root
    assert edit_inputs.reference_dir(None, role="styles", inventory=locate([tmp_path])) is None

    work = tmp_path / "work"
    opts = dict(latents_dir=tmp_path / "none", progress=False, project_steps=1, lpips=None, mse_weight=1.0)
    inp = edit_inputs.expression_inputs(G, expressions_dir=root, work_dir=work, emotions=("neutral", "happy"), **opts)
    assert list(inp.references["neutral"]) == ["a"] and list(inp.references["happy"]) == ["b", "c"]
    assert inp.photos == {"neutral": work / "neutral" / "aligned" / "a.png",
                          "happy": work / "happy" / "aligned" / "b.png"}
    assert Image.open(work / "happy" / "aligned" / "c.png").size == (256, 256)
    assert inp.stand_ins and not any("meaningless" in n for n in inp.notes)  # only the targets stand in

    # the same photos as styles, in the same work folder: reused, nothing is projected again
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*.pt")}
    st = edit_inputs.style_inputs(G, styles_dir=root / "Happy", work_dir=work / "happy", **opts)
    assert list(st.references["styles"]) == ["b", "c"]
    assert st.photos == {s: work / "happy" / "aligned" / f"{s}.png" for s in ("b", "c")}
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.pt")} == before
    assert torch.equal(st.references["styles"]["b"].wplus, inp.references["happy"]["b"].wplus)


def test_generator_for_finds_the_recorded_generator(small_generator, tmp_path, monkeypatch):
    from facelib.session import smoke_generator
    from facelib.weights import file_sha256, save_generator

    def saved(sha, weights_path=None):
        return latents.SavedLatents(wplus=torch.zeros(1, 1, 1), noises=None, names=["x"], weights_sha256=sha,
                                  weights_path=weights_path, path=tmp_path / "x.pt")

    smoke = smoke_generator(2)
    G, where = latents.generator_for([saved(smoke.weights_sha256)])
    assert "seed 2" in where and G.weights_sha256 == smoke.weights_sha256
    weights = tmp_path / "data" / "G.pt"
    save_generator(small_generator, weights)
    monkeypatch.setenv("FACELIB_DATA", str(weights.parent))
    sha = file_sha256(weights)
    G, where = latents.generator_for([saved(sha)])
    assert "SHA-256 match" in where and G.weights_sha256 == sha
    G, where = latents.generator_for([saved(None, str(weights))])
    assert "recorded in x.pt" in where and G.weights_sha256 == sha
    with pytest.raises(facelib.DependencyError, match="which generator"):
        latents.generator_for([saved("0" * 64)])
