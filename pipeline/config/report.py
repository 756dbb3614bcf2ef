"""``report:`` section: the analysts' HTML report."""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import Section


class ReportConfig(Section):
    """Report layout.

    Attributes:
        title: Page title.
        max_cards: Most per-patch/per-farm cards shown (flagged ones first).
    """

    title: str = "Solar-farm model audit"
    max_cards: int = Field(default=24, ge=1)
