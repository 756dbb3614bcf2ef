"""``tiles:`` section: mask rasterization and spatial splits."""

from __future__ import annotations

from typing import Final

from pydantic import Field, model_validator

from pipeline.config.base import Section

#: Default side of the split blocks, metres (``tiles.block_size_m``, and ``labels.block_size_m``
#: when neither section sets it).
DEFAULT_BLOCK_SIZE_M: Final[float] = 10_000.0


class TilesConfig(Section):
    """Masks and splits.

    Attributes:
        all_touched: Rasterize every pixel a farm touches (default: pixel-centre rule, a pixel
            is farm when its centre lies inside a farm).
        block_size_m: Side of the square spatial blocks that splits are assigned by, metres
            (in each patch's UTM zone; a patch belongs to the block holding its centre). The
            labels stage plans patches inside the same blocks: ``labels.block_size_m`` follows
            this value unless a config sets it (then this stage warns when they differ).
        split_fractions: ``[train, val, test]`` shares of blocks; must sum to 1.
        split_seed: Seed of the block-to-split hash; ``None`` uses ``run.seed``. Fix it to keep
            the same split while the model seed varies (the shortcut experiment does).
    """

    all_touched: bool = False
    block_size_m: float = Field(default=DEFAULT_BLOCK_SIZE_M, gt=0)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> TilesConfig:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError(
                f"tiles.split_fractions {list(self.split_fractions)} must be three "
                "non-negative shares summing to 1, e.g. [0.7, 0.15, 0.15]"
            )
        return self
