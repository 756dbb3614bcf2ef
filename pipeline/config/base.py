"""The base of every config section: frozen, typed, unknown keys rejected."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors; values are validated and immutable.

    ``digest_optional`` names keys added after runs already existed (opt-in features such as
    ``train.ignore_labels``): :meth:`digest_values` leaves them out while they hold their
    default, so a stage's config digest, and with it every existing run, stays as it was
    until a config uses the feature.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    digest_optional: ClassVar[frozenset[str]] = frozenset()

    def digest_values(self) -> dict[str, Any]:
        """The JSON values a config digest covers: all but :attr:`digest_optional` keys at
        their default."""
        values = self.model_dump(mode="json")
        for key in self.digest_optional:
            if getattr(self, key) == type(self).model_fields[key].default:
                values.pop(key, None)
        return values
