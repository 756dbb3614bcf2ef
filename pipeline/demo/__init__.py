"""The demo world: a real Sentinel-2 scene with planted solar farms and snow."""

from __future__ import annotations

from pipeline.config import RunConfig


def build_world(cfg: RunConfig, *, force: bool = False) -> None:
    raise NotImplementedError
