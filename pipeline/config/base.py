"""The base of every config section: frozen, typed, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors; values are validated and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
