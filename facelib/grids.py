"""Tensor <-> image conversion and comparison grids.

uint8 HWC images exist only here and in file I/O; everything else in facelib works on
float tensors (N, 3, H, W) in [-1, 1].
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ._io import atomic_path
from .errors import InputError

__all__ = ["to_pil", "to_tensor", "make_grid", "save_image", "stamp"]


def to_pil(images: torch.Tensor) -> "Image.Image | list[Image.Image]":
    """(3, H, W) or (N, 3, H, W) float in [-1, 1] -> PIL RGB image (or a list for N)."""
    if images.ndim == 3:
        return to_pil(images[None])[0]
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"to_pil: expected (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in arr]


def to_tensor(images: "Image.Image | Sequence[Image.Image]", size: int | None = None) -> torch.Tensor:
    """PIL image(s) -> (N, 3, size, size) float32 in [-1, 1] (LANCZOS resize when ``size`` is given)."""
    if isinstance(images, Image.Image):
        images = [images]
    out = []
    for im in images:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def wrap_text(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` broken into lines that fit ``width`` pixels in ``font`` (at spaces; a word longer
    than the width is split). Existing line breaks are kept; an empty text gives no lines."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    fits = lambda t: measure.textlength(t, font=font) <= width  # noqa: E731
    lines: list[str] = []
    for para in str(text).splitlines():
        current = ""
        for word in para.split(" "):
            trial = f"{current} {word}" if current else word
            if fits(trial):
                current = trial
                continue
            if current:
                lines.append(current)
            while word and not fits(word):  # a word wider than the line: cut it
                k = max(1, next((i for i in range(len(word), 0, -1) if fits(word[:i])), 1))
                lines.append(word[:k])
                word = word[k:]
            current = word
        lines.append(current)
    return lines


def make_grid(rows: Sequence[Sequence["Image.Image | torch.Tensor | None"]], *, cell: int = 256,
              row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
              captions: Sequence[Sequence[str]] | None = None, title: str | None = None,
              pad: int = 4) -> Image.Image:
    """Lay images out as a labelled table.

    Args:
        rows: rows of cells; a cell is a PIL image, a (3, H, W) tensor in [-1, 1], or None (empty).
        cell: side of each (square) cell in pixels.
        row_labels / col_labels: text left of each row / above each column.
        captions: per-cell text drawn under the image (e.g. PSNR).
        title: a line above the table (used for stamps such as "smoke run").
    Returns:
        An RGB PIL image.
    """
    n_cols = max((len(r) for r in rows), default=0)
    font = _font(max(10, cell // 16))
    line = max(12, cell // 14)
    left = (max((len(s) for s in row_labels), default=0) * line * 6 // 10 + 2 * pad) if row_labels else 0
    top = (line + 2 * pad) if col_labels else 0
    cap = (line + pad) if captions else 0
    width = left + n_cols * (cell + pad) + pad
    title_lines = wrap_text(title, font, max(width, 1) - 2 * pad) if title else []  # never clipped at the edge
    head = (line + 2 * pad) * len(title_lines)
    height = head + top + len(rows) * (cell + cap + pad) + pad
    canvas = Image.new("RGB", (max(width, 1), max(height, 1)), "white")
    draw = ImageDraw.Draw(canvas)
    if title_lines:
        for k, text in enumerate(title_lines):
            draw.text((pad, pad + k * (line + 2 * pad)), text, fill=(200, 0, 0), font=font)
    if col_labels:
        for j, text in enumerate(col_labels):
            draw.text((left + pad + j * (cell + pad), head + pad), str(text), fill="black", font=font)
    for i, row in enumerate(rows):
        y = head + top + pad + i * (cell + cap + pad)
        if row_labels:
            draw.text((pad, y + cell // 2), str(row_labels[i]), fill="black", font=font)
        for j, item in enumerate(row):
            x = left + pad + j * (cell + pad)
            if item is None:
                continue
            im = to_pil(item) if isinstance(item, torch.Tensor) else item.convert("RGB")
            canvas.paste(im.resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
            if captions and i < len(captions) and j < len(captions[i]) and captions[i][j]:
                draw.text((x, y + cell + 1), str(captions[i][j]), fill="black", font=font)
    return canvas


def stamp(image: Image.Image, text: str) -> Image.Image:
    """Return ``image`` with a red banner holding ``text`` added above it (nothing is covered;
    a text wider than the image is wrapped onto more lines, never clipped)."""
    image = image.convert("RGB")
    font = _font(max(12, image.width // 40))
    line = max(18, image.width // 30)
    lines = wrap_text(text, font, image.width - 8) or [""]
    h = line * len(lines) + 6
    out = Image.new("RGB", (image.width, image.height + h), (200, 0, 0))
    out.paste(image, (0, h))
    draw = ImageDraw.Draw(out)
    for k, text_line in enumerate(lines):
        draw.text((4, 3 + k * line), text_line, fill="white", font=font)
    return out


def save_image(image: "Image.Image | torch.Tensor", path: "str | os.PathLike[str]", **save_kwargs) -> None:
    """Save a PIL image or a (3, H, W) tensor in [-1, 1] atomically (temp file + rename)."""
    if isinstance(image, torch.Tensor):
        image = to_pil(image)
    with atomic_path(path) as tmp:
        image.save(tmp, **save_kwargs)
