"""One error hierarchy for the whole pipeline.

Every error a user can cause derives from :class:`PipelineError` and also from the builtin
it resembles, so callers may catch either. Messages follow one shape: what is wrong, where,
and how to fix it. The CLI prints the message alone (no traceback) and exits non-zero.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""

    exit_code = 2


class ConfigError(PipelineError, ValueError):
    """A config file or ``--set`` override is malformed, unknown or out of range."""


class MissingArtifactError(PipelineError, FileNotFoundError):
    """An upstream stage's output is missing: run the named make target first."""

    def __init__(self, what: str, path: object, make_target: str) -> None:
        super().__init__(
            f"{what} not found at {path}. Run `make {make_target}` first "
            f"(or `python -m pipeline {make_target.split()[0]} --config ...`)."
        )
        self.what = what
        self.path = path
        self.make_target = make_target

    def __reduce__(self) -> tuple[type, tuple[str, object, str]]:
        """Pickle by the constructor's arguments (it travels back from Dask workers)."""
        return type(self), (self.what, self.path, self.make_target)


class RasterError(PipelineError, OSError):
    """A raster cannot be read, or is not what the pipeline expects (band count, order, dtype)."""


class GeoMismatchError(PipelineError, ValueError):
    """Two geospatial objects disagree (CRS, transform, shape, band set)."""


class LabelsError(PipelineError, ValueError):
    """OSM input is unusable: no solar features, an empty AOI, a malformed response."""


class FetchError(PipelineError, OSError):
    """A remote service (STAC API, COG host, Overpass) failed after retries."""


class ModelError(PipelineError, ValueError):
    """A checkpoint or model input is incompatible (band set, normalization, shape)."""


class AttributionError(PipelineError, ValueError):
    """An attribution request cannot be honoured (empty target, unknown method, tiny budget)."""


class AuditError(PipelineError, ValueError):
    """An audit cannot be computed (missing cue bands, thresholds out of range, no attributions)."""


class MapError(PipelineError, ValueError):
    """An area cannot be mapped: no imagery, unreadable chunks, an area that is not one."""


class ComputeError(PipelineError, OSError):
    """The Dask cluster cannot be reached or started."""
