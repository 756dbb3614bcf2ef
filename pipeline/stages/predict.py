"""predict stage (being built)."""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    raise NotImplementedError("predict")
