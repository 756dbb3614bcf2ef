"""Spatial splits: square blocks assigned to train/val/test by a seeded hash.

A block's split depends only on the block and the seed, never on which other blocks exist,
so the demo world builder and the tiles stage agree on which part of a scene is "training".
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def block_id(epsg: int, x: float, y: float, block_size_m: float) -> str:
    """Name of the ``block_size_m`` square block holding projected point ``(x, y)``."""
    return f"{epsg}:{math.floor(x / block_size_m)}:{math.floor(y / block_size_m)}"


def block_split(block: str, fractions: tuple[float, float, float], seed: int) -> Split:
    """Split of ``block``: a uniform draw from a hash of ``(seed, block)`` cut by ``fractions``."""
    digest = hashlib.sha256(f"{seed}/{block}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split, share in zip(SPLITS, fractions, strict=True):
        edge += share
        if u < edge:
            return split
    return SPLITS[-1]
