"""The per-chunk Dask tasks: screen a chunk's acquisitions, composite and predict it.

:func:`screen_chunk` (phase 1) reads only SCL: it ranks the chunk's acquisitions by clear share
and says which ones its composite uses, or that the chunk is a gap. :func:`map_chunk` (phase 2)
resamples the used acquisitions' bands from their blocks, composites, predicts the haloed grid
with the blended sliding window, crops the halo and writes ``<chunk>.tif`` (probability) and
``<chunk>_src.tif`` (provenance) atomically, tagged with the chunk digest. It returns the
polygon pieces of the chunk's core, so farms never need a mosaic in memory.
:func:`chunk_from_files` returns the same for a chunk finished by an earlier run.

The model is loaded once per worker process (:func:`predictor`), with torch using
``threads_per_worker`` threads, so results do not depend on how many workers run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from torch import nn

from pipeline.geo.raster import Grid, write_cog
from pipeline.mapping.composite import (
    NONE,
    choose,
    clear_mask,
    clear_share,
    compose,
    harmonized_scene,
    item_order,
    rank,
    scene_scl,
)
from pipeline.mapping.grid import Chunk
from pipeline.mapping.pieces import Piece, chunk_pieces
from pipeline.mapping.reads import SourceWindow, resample_window, resampling_for
from pipeline.model.io import ModelMeta
from pipeline.model.window import Predictor, WindowSpec, predict_array, resolve_device
from pipeline.net import RetryPolicy

#: Loads ``model.pt``: ``(module in eval mode, meta)`` (e.g. :func:`pipeline.model.io.load_model`).
ModelLoader = Callable[..., tuple[nn.Module, ModelMeta]]
#: Blocks of one item's assets, parallel to its windows: ``[[block arrays of window 0], ...]``.
Blocks = Sequence[Sequence[np.ndarray]]


@dataclass(frozen=True)
class ModelRef:
    """The model the workers load (once each).

    Attributes:
        path: ``model.pt`` (a path every worker can read).
        sha256: Its digest (part of the cache key and of every chunk digest).
        loader: A top-level function ``loader(path, device=...) -> (module, meta)``.
    """

    path: str
    sha256: str
    loader: ModelLoader


@dataclass(frozen=True)
class ChunkSettings:
    """What every chunk task needs besides its own inputs.

    Attributes:
        max_scenes: Acquisitions considered per chunk, clearest first.
        clear_tie: Width of a clear-share tie bucket.
        target_date: Ties go to the acquisition nearest this date (None: most recent).
        window: Sliding-window settings.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        threads: torch threads per worker.
        threshold: Probability threshold of a farm pixel.
        policy: Retries of each read.
        gdal: GDAL option overrides for each read.
        provenance_dtype: ``uint8`` or ``uint16``.
        model: The model.
    """

    max_scenes: int
    clear_tie: float
    target_date: date | None
    window: WindowSpec
    device: str
    threads: int
    threshold: float
    policy: RetryPolicy
    provenance_dtype: str
    model: ModelRef
    gdal: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemWindows:
    """One item's source windows for one chunk.

    Attributes:
        item_id: The item.
        offset_dn: DN subtracted to harmonize it (0 for SCL).
        windows: One per band, in ``bands`` order.
        bands: Band ids.
    """

    item_id: str
    offset_dn: int
    windows: tuple[SourceWindow, ...]
    bands: tuple[str, ...]


@dataclass(frozen=True)
class SceneWindows:
    """One acquisition's items for one chunk.

    Attributes:
        index: Acquisition index (provenance value).
        when: Its datetime.
        items: Its items meeting the chunk, by id.
    """

    index: int
    when: datetime
    items: tuple[ItemWindows, ...]


@dataclass(frozen=True)
class Screen:
    """Phase 1 of a chunk: its acquisitions ranked, which its composite uses, or a gap.

    Attributes:
        chunk_id: The chunk.
        gap: Why it is a gap, or ``""``.
        considered: Acquisition indices, clearest first (at most ``max_scenes``).
        item_orders: ``{index: item positions in mosaic order}`` of the considered ones.
        used: Indices of the acquisitions some pixel of the read grid takes its bands from.
        clear_share: Share of the chunk's mapped pixels clear in some considered acquisition.
    """

    chunk_id: str
    gap: str
    considered: tuple[int, ...] = ()
    item_orders: dict[int, tuple[int, ...]] = field(default_factory=dict)
    used: tuple[int, ...] = ()
    clear_share: float = 0.0


@dataclass(frozen=True)
class ChunkResult:
    """What a finished chunk tells the client.

    Attributes:
        chunk_id: The chunk.
        status: ``done`` (mapped now) or ``reused`` (files of an earlier run kept).
        clear_share: Share of its mapped pixels with a clear acquisition.
        used: Acquisition indices its pixels come from.
        pixels: Pixels with a probability.
        pieces: Polygon pieces of its core (zone CRS).
    """

    chunk_id: str
    status: str
    clear_share: float
    used: tuple[int, ...]
    pixels: int
    pieces: tuple[Piece, ...]


def chunk_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of what a chunk's files depend on (settings, model, items, acquisition indices)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def predictor(model: ModelRef, device: str, threads: int, batch_size: int) -> Predictor:
    """The worker's predictor, loaded once per process and model."""
    import torch

    torch.set_num_threads(threads)
    dev = resolve_device(device)
    module, meta = model.loader(Path(model.path), device=dev)
    return Predictor(module, meta, dev, batch_size)


def _read_scls(scene: SceneWindows, blocks: Sequence[Blocks], grid: Grid) -> list[np.ndarray]:
    return [
        resample_window(item.windows[0], item_blocks[0], grid, resampling_for("SCL"), "uint8")
        for item, item_blocks in zip(scene.items, blocks, strict=True)
    ]


def _layers(
    chunk: Chunk, scenes: Sequence[SceneWindows], blocks: Sequence[Sequence[Blocks]]
) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each scene's mosaicked SCL on the read grid, and its item mosaic order."""
    grid = chunk.read
    scls, orders = [], []
    for scene, scene_blocks in zip(scenes, blocks, strict=True):
        item_scls = _read_scls(scene, scene_blocks, grid)
        order = item_order([it.item_id for it in scene.items], item_scls)
        orders.append(order)
        scls.append(scene_scl(item_scls, order, grid.shape))
    return scls, orders


def _mapped(chunk: Chunk) -> np.ndarray:
    """Read-grid bool of the core pixels inside the area (the pixels the chunk maps)."""
    h = chunk.halo_px
    mapped = np.zeros(chunk.read.shape, bool)
    mapped[h : h + chunk.chunk_px, h : h + chunk.chunk_px] = chunk.area_mask()
    return mapped


def screen_chunk(
    chunk: Chunk,
    scenes: Sequence[SceneWindows],
    blocks: Sequence[Sequence[Blocks]],
    settings: ChunkSettings,
) -> Screen:
    """Phase 1 (a Dask task): rank the chunk's acquisitions on their SCL, pick the used ones.

    Args:
        chunk: The chunk.
        scenes: Candidate acquisitions with their items' SCL windows.
        blocks: ``blocks[scene][item][0]``: the SCL window's blocks.
        settings: Ranking settings.
    """
    mapped = _mapped(chunk)
    scls, orders = _layers(chunk, scenes, blocks)
    clears = [clear_mask(scl) for scl in scls]
    shares = [clear_share(c, mapped) for c in clears]
    firsts = [
        s.items[o[0]].item_id if o else s.items[0].item_id
        for s, o in zip(scenes, orders, strict=True)
    ]
    ranked = rank(
        shares,
        [s.when for s in scenes],
        firsts,
        target=settings.target_date,
        tie=settings.clear_tie,
    )[: settings.max_scenes]
    choice = choose([clears[i] for i in ranked])
    covered = float(((choice != NONE) & mapped).sum()) / max(int(mapped.sum()), 1)
    if not ((choice != NONE) & mapped).any():
        reason = (
            "no item covers it"
            if not any(orders[i] for i in range(len(scenes)))
            else f"cloudy/missing in all {len(scenes)} acquisition(s)"
        )
        return Screen(chunk.chunk_id, reason, clear_share=0.0)
    used = tuple(
        scenes[ranked[p]].index for p in sorted({int(v) for v in np.unique(choice)} - {NONE})
    )
    return Screen(
        chunk.chunk_id,
        "",
        tuple(scenes[i].index for i in ranked),
        {scenes[i].index: tuple(orders[i]) for i in ranked},
        tuple(sorted(used)),
        covered,
    )


def _composite(
    chunk: Chunk,
    screen: Screen,
    scl_scenes: Sequence[SceneWindows],
    scl_blocks: Sequence[Sequence[Blocks]],
    band_scenes: Sequence[SceneWindows],
    band_blocks: Sequence[Sequence[Blocks]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (10, H, W) uint16, SCL (H, W), choice (H, W))`` on the read grid."""
    grid = chunk.read
    by_index = {s.index: (s, b) for s, b in zip(scl_scenes, scl_blocks, strict=True)}
    scls = []
    for index in screen.considered:
        scene, blocks = by_index[index]
        item_scls = _read_scls(scene, blocks, grid)
        scls.append(scene_scl(item_scls, screen.item_orders[index], grid.shape))
    choice = choose([clear_mask(s) for s in scls])
    images = {}
    for scene, blocks in zip(band_scenes, band_blocks, strict=True):
        raws = [
            np.stack(
                [
                    resample_window(sw, bb, grid, resampling_for(band), "uint16")
                    for sw, bb, band in zip(item.windows, item_blocks, item.bands, strict=True)
                ]
            )
            for item, item_blocks in zip(scene.items, blocks, strict=True)
        ]
        order = list(screen.item_orders[scene.index])
        images[screen.considered.index(scene.index)] = harmonized_scene(
            raws, [it.offset_dn for it in scene.items], order
        )
    image = compose(choice, images)
    scl = compose(choice, {p: scls[p] for p in images})
    return image, scl, choice


def _provenance(screen: Screen, choice: np.ndarray, dtype: str) -> np.ndarray:
    lookup = np.zeros(len(screen.considered) + 1, np.int64)
    lookup[:-1] = screen.considered  # choice NONE (-1) picks the trailing 0
    return lookup[choice].astype(dtype)


def map_chunk(
    chunk: Chunk,
    screen: Screen,
    scl_scenes: Sequence[SceneWindows],
    scl_blocks: Sequence[Sequence[Blocks]],
    band_scenes: Sequence[SceneWindows],
    band_blocks: Sequence[Sequence[Blocks]],
    settings: ChunkSettings,
    out: tuple[str, str],
    digest: str,
) -> ChunkResult:
    """Phase 2 (a Dask task): composite, predict and write one chunk; return its pieces.

    Args:
        chunk: The chunk.
        screen: Its phase-1 result.
        scl_scenes: The considered acquisitions' SCL windows (as in phase 1).
        scl_blocks: Their blocks.
        band_scenes: The used acquisitions' 10-band windows (items as in ``scl_scenes``).
        band_blocks: Their blocks.
        settings: Prediction settings.
        out: ``(probability path, provenance path)``.
        digest: The chunk digest written into both files' tags.
    """
    image, _, choice = _composite(chunk, screen, scl_scenes, scl_blocks, band_scenes, band_blocks)
    mapped = _mapped(chunk)
    model = predictor(settings.model, settings.device, settings.threads, settings.window.batch_size)
    prob = predict_array(image, model, settings.window, needed=mapped & (choice != NONE))
    h, n = chunk.halo_px, chunk.chunk_px
    core = slice(h, h + n)
    keep = mapped[core, core] & (choice[core, core] != NONE)
    prob_core = np.where(keep, prob[core, core], np.nan).astype(np.float32)
    prov = np.where(keep, _provenance(screen, choice[core, core], "int64"), 0)
    prov = prov.astype(settings.provenance_dtype)
    result = ChunkResult(
        chunk.chunk_id,
        "done",
        screen.clear_share,
        screen.used,
        int(keep.sum()),
        tuple(chunk_pieces(prob_core, prov, chunk, settings.threshold)),
    )
    tags = {
        "chunk_digest": digest,
        "chunk_id": chunk.chunk_id,
        "clear_share": f"{screen.clear_share:.6f}",
        "acquisitions": json.dumps(list(screen.used)),
    }
    grid = chunk.core
    write_cog(
        out[1],
        prov[None],
        grid,
        band_names=["acquisition"],
        nodata=0,
        tags=tags,
        overview_resampling="nearest",
    )
    write_cog(
        out[0], prob_core[None], grid, band_names=["probability"], nodata=float("nan"), tags=tags
    )
    return result


def finished_tags(out: tuple[str, str], digest: str) -> dict[str, str] | None:
    """Tags of a chunk whose two files exist and carry ``digest``, else None."""
    if not (Path(out[0]).is_file() and Path(out[1]).is_file()):
        return None
    try:
        with rasterio.open(out[0]) as prob, rasterio.open(out[1]) as prov:
            tags, other = prob.tags(), prov.tags()
    except rasterio.errors.RasterioError:
        return None
    if tags.get("chunk_digest") != digest or other.get("chunk_digest") != digest:
        return None
    return dict(tags)


def chunk_from_files(chunk: Chunk, out: tuple[str, str], threshold: float) -> ChunkResult:
    """A chunk finished by an earlier run (a Dask task): its pieces from its files."""
    with rasterio.open(out[0]) as src:
        prob, tags = src.read(1), src.tags()
    with rasterio.open(out[1]) as src:
        prov = src.read(1)
    return ChunkResult(
        chunk.chunk_id,
        "reused",
        float(tags.get("clear_share", 0.0)),
        tuple(json.loads(tags.get("acquisitions", "[]"))),
        int(np.isfinite(prob).sum()),
        tuple(chunk_pieces(prob, prov, chunk, threshold)),
    )
