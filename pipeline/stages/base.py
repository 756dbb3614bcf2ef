"""What every stage returns and how the runner turns it into a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageOutput:
    """Result of a stage's ``run(cfg, paths)``.

    Attributes:
        outputs: Files and folders written (absolute or relative to the working directory).
        summary: Counts, metrics, skips and their reasons, for the manifest.
    """

    outputs: list[Path]
    summary: dict[str, Any] = field(default_factory=dict)
