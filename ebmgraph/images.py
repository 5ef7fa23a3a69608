"""Write grids of greyscale images as PNG files, with no dependency beyond the standard library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images: torch.Tensor, *, columns: int, padding: int = 2) -> torch.Tensor:
    """Tile images of shape ``(n, height, width)`` with values in [0, 1] into one ``(H, W)`` tensor."""
    if images.dim() != 3:
        raise ValueError(f"images must have shape (n, height, width), got {tuple(images.shape)}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    n, height, width = images.shape
    rows = -(-n // columns)
    grid = torch.ones(rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index in range(n):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = images[index].detach().float().cpu()
    return grid


def save_image_grid(path: str | Path, images: torch.Tensor, *, columns: int, padding: int = 2) -> Path:
    """Save ``images`` (``(n, height, width)``, values in [0, 1]) as one 8-bit greyscale PNG grid."""
    grid = image_grid(images, columns=columns, padding=padding)
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8)
    height, width = pixels.shape
    # Each PNG scanline starts with its filter type, 0 (none).
    raw = b"".join(b"\x00" + bytes(row) for row in pixels.tolist())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
