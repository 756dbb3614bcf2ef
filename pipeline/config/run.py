"""``run:`` section: the run's name, seed and where artefacts go."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipeline.config.base import Section


class RunSection(Section):
    """Identity of a run.

    Attributes:
        name: Run name; artefacts go to ``<data_root>/runs/<name>/``.
        seed: The one seed every random choice in every stage derives from (``0`` is valid).
        data_root: Root folder for runs, worlds and caches (relative to the working directory).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(default=0, ge=0)
    data_root: Path = Path("data")
