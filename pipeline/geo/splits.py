"""Spatial splits: square blocks assigned to train/val/test by a seeded hash.

A block's split depends only on the block and the seed, never on which other blocks exist,
so the demo world builder and the tiles stage agree on which part of a scene is "training".
Patches that overlap or show the same farm must share a split: :func:`group_patches` joins
them, and :func:`assign_splits` gives each group the split of its first member's block.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol

import shapely
from shapely.geometry.base import BaseGeometry

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


def split_of(
    epsg: int,
    x: float,
    y: float,
    block_size_m: float,
    fractions: tuple[float, float, float],
    seed: int,
) -> Split:
    """Split of the block holding projected point ``(x, y)`` (a patch alone in its group)."""
    return block_split(block_id(epsg, x, y, block_size_m), fractions, seed)


def group_patches(
    footprints: Sequence[BaseGeometry], farm_ids: Sequence[Sequence[str]]
) -> list[int]:
    """Connected groups of patches that overlap or share a farm (union-find).

    Args:
        footprints: Patch footprints in one common CRS (EPSG:4326); touching edges do not count
            as overlap, a shared interior does.
        farm_ids: Farms each patch shows.

    Returns:
        For each patch, the index of its group's first member (lowest index).
    """
    parent = list(range(len(footprints)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    tree = shapely.STRtree(list(footprints))
    for i, fp in enumerate(footprints):
        for j in tree.query(fp, predicate="intersects"):
            j = int(j)
            if j != i and fp.intersection(footprints[j]).area > 1e-9 * fp.area:
                union(i, j)
    first_with: dict[str, int] = {}
    for i, ids in enumerate(farm_ids):
        for fid in ids:
            union(i, first_with.setdefault(fid, i))
    return [find(i) for i in range(len(footprints))]


class Placed(Protocol):
    """A patch as the split assignment sees it."""

    @property
    def epsg(self) -> int:
        """EPSG code of the patch grid (a UTM zone)."""
        ...

    @property
    def centre(self) -> tuple[float, float]:
        """Patch centre ``(x, y)`` in metres, in that CRS."""
        ...

    @property
    def footprint(self) -> BaseGeometry:
        """Patch outline in EPSG:4326."""
        ...

    @property
    def farm_ids(self) -> tuple[str, ...]:
        """Farms the patch shows."""
        ...


class SplitAssignment(NamedTuple):
    """Per patch, in input order: its block, its split and its group's first member."""

    blocks: list[str]
    splits: list[Split]
    groups: list[int]


def assign_splits(
    patches: Sequence[Placed],
    block_size_m: float,
    fractions: tuple[float, float, float],
    seed: int,
) -> SplitAssignment:
    """Split per patch: its group's first member's block, hashed with ``seed``.

    Args:
        patches: The patches, in a stable order (group ids are positions in it).
        block_size_m: Side of the square blocks, metres.
        fractions: Train, val, test shares (summing to 1).
        seed: The split seed.

    Returns:
        Blocks, splits and groups; groups are numbered by their first member's position.
    """
    blocks = [block_id(p.epsg, *p.centre, block_size_m) for p in patches]
    groups = group_patches([p.footprint for p in patches], [p.farm_ids for p in patches])
    splits = [block_split(blocks[g], fractions, seed) for g in groups]
    return SplitAssignment(blocks, splits, groups)


def block_splitter(
    block_size_m: float, fractions: tuple[float, float, float], seed: int
) -> Callable[[int, float, float], Split]:
    """``split_at(epsg, x, y)``: :func:`split_of` with these blocks, shares and seed."""

    def split_at(epsg: int, x: float, y: float) -> Split:
        return split_of(epsg, x, y, block_size_m, fractions, seed)

    return split_at
