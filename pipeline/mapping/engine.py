"""Submit the chunks of an area to Dask: block reads, screens and chunk tasks, streamed.

Chunks are taken in plan order (zone by zone, north to south, west to east), at most
``in_flight`` at a time. A chunk's SCL blocks and screen are submitted first; when its screen
comes back, the blocks of the acquisitions it uses and its chunk task follow. Block tasks are
keyed by asset and block, so every chunk needing a block (halos included) shares its one read;
the client drops its reference to a block once no unfinished chunk can still need it, and Dask
frees it when its last dependent has run, so memory stays near one row of chunks whatever the
area. A chunk whose files carry its digest is not recomputed: its pieces are read back. A
failing chunk is recorded and the others go on; the caller decides what a failure means.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from rasterio.warp import transform_bounds
from shapely.geometry import box

from pipeline.bands import BANDS
from pipeline.errors import MapError
from pipeline.mapping.chunks import (
    ChunkResult,
    ChunkSettings,
    ItemWindows,
    SceneWindows,
    Screen,
    chunk_from_files,
    finished_tags,
    map_chunk,
    screen_chunk,
)
from pipeline.mapping.grid import Chunk
from pipeline.mapping.provenance import Acquisition
from pipeline.mapping.reads import (
    Asset,
    AssetInfo,
    SourceWindow,
    open_info,
    plan_window,
    read_block,
)
from pipeline.mapping.search import Candidates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkPlan:
    """Everything the client knows about the area's chunks before any task runs.

    Attributes:
        chunks: In processing order.
        table: The area's acquisitions.
        candidates: ``{chunk_id: its candidate acquisitions and items}``.
        hrefs: ``{(item id, band): readable href}``.
        offsets: ``{item id: harmonization DN offset}``.
        digests: ``{chunk_id: chunk digest}``.
        outputs: ``{chunk_id: (probability path, provenance path)}``.
    """

    chunks: Sequence[Chunk]
    table: Sequence[Acquisition]
    candidates: Mapping[str, Candidates]
    hrefs: Mapping[tuple[str, str], str]
    offsets: Mapping[str, int]
    digests: Mapping[str, str]
    outputs: Mapping[str, tuple[str, str]]


@dataclass
class EngineReport:
    """What happened to every chunk.

    Attributes:
        results: ``{chunk_id: result}`` of mapped and reused chunks.
        gaps: ``{chunk_id: reason}``.
        failures: ``{chunk_id: error message}``.
        block_tasks: Block read tasks submitted.
        seconds: Wall time.
    """

    results: dict[str, ChunkResult] = field(default_factory=dict)
    gaps: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    block_tasks: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        statuses = [r.status for r in self.results.values()]
        return {
            "done": statuses.count("done"),
            "reused": statuses.count("reused"),
            "gaps": len(self.gaps),
            "failed": len(self.failures),
        }


def _message(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:600]


class _Run:
    """One pass over a plan on one client (the state of :func:`run_chunks`)."""

    def __init__(self, client: Any, plan: ChunkPlan, settings: ChunkSettings, retries: int) -> None:
        self.client = client
        self.plan = plan
        self.settings = settings
        self.retries = retries
        self.token = uuid.uuid4().hex[:8]
        self.by_id = {c.chunk_id: c for c in plan.chunks}
        self.position = {c.chunk_id: i for i, c in enumerate(plan.chunks)}
        self.tree = shapely.STRtree([c.read_footprint for c in plan.chunks])
        self.finalized: set[int] = set()
        self.infos: dict[Asset, AssetInfo] = {}
        self.blocks: dict[str, Any] = {}
        self.holders: dict[str, set[int]] = {}
        self.keys_of: dict[int, set[str]] = {}
        self.report = EngineReport()
        self.scl: dict[str, tuple[list[SceneWindows], list[Any]]] = {}

    # blocks ------------------------------------------------------------------------------
    def info(self, item_id: str, band: str) -> AssetInfo:
        asset = Asset(item_id, band, self.plan.hrefs[(item_id, band)])
        if asset not in self.infos:
            self.infos[asset] = open_info(asset, self.settings.policy, self.settings.gdal)
        return self.infos[asset]

    def block(self, sw: SourceWindow, block: tuple[int, int]) -> Any:
        key = f"{sw.block_key(block)}-{self.token}"
        fut = self.blocks.get(key)
        if fut is None:
            fut = self.client.submit(
                read_block,
                sw.info,
                block,
                self.settings.policy,
                dict(self.settings.gdal),
                key=key,
                retries=self.retries,
            )
            self.report.block_tasks += 1
            self.blocks[key] = fut
            self.holders[key] = set()
            for pos in self._needers(sw.info, block):
                self.holders[key].add(pos)
                self.keys_of.setdefault(pos, set()).add(key)
        return fut

    def _needers(self, info: AssetInfo, block: tuple[int, int]) -> list[int]:
        """Unfinished chunks whose read grid may need ``block`` (checked in EPSG:4326)."""
        bh, bw = info.block_shape
        t = info.transform
        x0, y0 = t @ (block[0] * bw, block[1] * bh)
        x1, y1 = t @ ((block[0] + 1) * bw, (block[1] + 1) * bh)
        lonlat = transform_bounds(
            info.crs, "EPSG:4326", min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), densify_pts=5
        )
        pad = 1e-4  # about 10 m: the windows' margin, and densification error
        hits = self.tree.query(box(*lonlat).buffer(pad))
        return [int(i) for i in hits if int(i) not in self.finalized]

    def finalize(self, chunk_id: str) -> None:
        """The chunk's last task is submitted (or it ended): release blocks it alone held."""
        pos = self.position[chunk_id]
        self.finalized.add(pos)
        for key in self.keys_of.pop(pos, set()):
            holders = self.holders.get(key)
            if holders is None:
                continue
            holders.discard(pos)
            if not holders:
                del self.holders[key]
                del self.blocks[key]

    # windows -----------------------------------------------------------------------------
    def scenes(
        self,
        chunk: Chunk,
        indices: Sequence[int],
        bands: tuple[str, ...],
        only: Mapping[int, Sequence[str]] | None = None,
    ) -> tuple[list[SceneWindows], list[Any]]:
        """Windows and block futures of ``bands`` of the chunk's items of ``indices``."""
        cands = self.plan.candidates[chunk.chunk_id]
        table = {a.index: a for a in self.plan.table}
        scenes, blocks = [], []
        for index in indices:
            items, item_blocks = [], []
            for item_id in (only or cands.items)[index]:
                windows = []
                for band in bands:
                    sw = plan_window(self.info(item_id, band), chunk.read)
                    if sw is None:
                        break
                    windows.append(sw)
                if len(windows) < len(bands):
                    if only is not None:
                        raise MapError(
                            f"STAC item {item_id} covers chunk {chunk.chunk_id} in SCL but not "
                            "in all its bands; check the item's assets"
                        )
                    continue
                offset = 0 if bands == ("SCL",) else self.plan.offsets[item_id]
                items.append(ItemWindows(item_id, offset, tuple(windows), bands))
                item_blocks.append([[self.block(sw, b) for b in sw.blocks] for sw in windows])
            if items:
                scenes.append(SceneWindows(index, table[index].when, tuple(items)))
                blocks.append(item_blocks)
        return scenes, blocks

    # chunks ------------------------------------------------------------------------------
    def start(self, chunk: Chunk) -> tuple[str, Any] | None:
        """Submit a chunk's first task: its reuse or its screen; None when it is a gap."""
        cid = chunk.chunk_id
        out, digest = self.plan.outputs[cid], self.plan.digests[cid]
        if finished_tags(out, digest) is not None:
            self.finalize(cid)
            return "reuse", self.client.submit(
                chunk_from_files,
                chunk,
                out,
                self.settings.threshold,
                key=f"reuse-{cid}-{self.token}",
                retries=self.retries,
            )
        cands = self.plan.candidates[cid]
        scenes, blocks = self.scenes(chunk, cands.acquisitions, ("SCL",))
        if not scenes:
            self.report.gaps[cid] = "no item covers it"
            self.finalize(cid)
            return None
        self.scl[cid] = (scenes, blocks)
        return "screen", self.client.submit(
            screen_chunk,
            chunk,
            scenes,
            blocks,
            self.settings,
            key=f"screen-{cid}-{self.token}",
            retries=self.retries,
        )

    def second(self, screen: Screen) -> Any | None:
        """Submit a screened chunk's chunk task; None when it is a gap."""
        cid = screen.chunk_id
        chunk = self.by_id[cid]
        scl_scenes, scl_blocks = self.scl.pop(cid)
        if screen.gap:
            self.report.gaps[cid] = screen.gap
            self.finalize(cid)
            return None
        keep = [i for i, s in enumerate(scl_scenes) if s.index in screen.considered]
        scl_scenes = [scl_scenes[i] for i in keep]
        scl_blocks = [scl_blocks[i] for i in keep]
        items = {s.index: [it.item_id for it in s.items] for s in scl_scenes}
        band_scenes, band_blocks = self.scenes(chunk, screen.used, BANDS, only=items)
        fut = self.client.submit(
            map_chunk,
            chunk,
            screen,
            scl_scenes,
            scl_blocks,
            band_scenes,
            band_blocks,
            self.settings,
            self.plan.outputs[cid],
            self.plan.digests[cid],
            key=f"chunk-{cid}-{self.token}",
            retries=self.retries,
        )
        self.finalize(cid)
        return fut


def run_chunks(
    client: Any,
    plan: ChunkPlan,
    settings: ChunkSettings,
    *,
    retries: int = 2,
    on_result: Callable[[ChunkResult, EngineReport], None] | None = None,
) -> EngineReport:
    """Map every chunk of ``plan`` on ``client`` (see the module docstring).

    Args:
        client: A ``distributed.Client``.
        plan: The chunks and what they read.
        settings: Chunk task settings.
        retries: Retries of a failing task.
        on_result: Called after each finished chunk (progress hooks, tests).

    Returns:
        Results, gaps and failures of every chunk.
    """
    from distributed import as_completed

    start = time.perf_counter()
    run = _Run(client, plan, settings, retries)
    threads = max(1, sum(client.nthreads().values()))
    in_flight = max(2, 2 * threads)
    todo = list(plan.chunks)[::-1]
    pending: dict[Any, tuple[str, str]] = {}
    queue = as_completed()
    every = max(1, len(plan.chunks) // 20)
    report = run.report
    logged = [0]

    def fill() -> None:
        while todo and len({c for _, c in pending.values()}) < in_flight:
            chunk = todo.pop()
            try:
                started = run.start(chunk)
            except MapError as err:
                report.failures[chunk.chunk_id] = _message(err)
                run.finalize(chunk.chunk_id)
                continue
            if started is not None:
                pending[started[1]] = (started[0], chunk.chunk_id)
                queue.add(started[1])

    def progress() -> None:
        finished = len(report.results) + len(report.gaps) + len(report.failures)
        if finished == logged[0] or (finished % every and finished != len(plan.chunks)):
            return
        logged[0] = finished
        elapsed = time.perf_counter() - start
        eta = elapsed / max(finished, 1) * (len(plan.chunks) - finished)
        counts = report.counts()
        log.info(
            "map: %d/%d chunks (%d mapped, %d reused, %d gaps, %d failed), ETA %.0f s",
            finished,
            len(plan.chunks),
            counts["done"],
            counts["reused"],
            counts["gaps"],
            counts["failed"],
            eta,
        )

    fill()
    for fut in queue:
        kind, cid = pending.pop(fut)
        if fut.status == "error" or fut.status == "cancelled":
            err = fut.exception() if fut.status == "error" else RuntimeError("cancelled")
            report.failures[cid] = _message(err)
            run.scl.pop(cid, None)
            run.finalize(cid)
        elif kind == "screen":
            try:
                nxt = run.second(fut.result())
            except MapError as err:
                report.failures[cid] = _message(err)
                run.finalize(cid)
                nxt = None
            if nxt is not None:
                pending[nxt] = ("chunk", cid)
                queue.add(nxt)
        else:
            result: ChunkResult = fut.result()
            report.results[cid] = result
            if on_result is not None:
                on_result(result, report)
        del fut
        progress()
        fill()
    report.seconds = time.perf_counter() - start
    return report
