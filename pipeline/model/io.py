"""The exported model: weights plus everything prediction and attribution need.

``model.pt`` is a plain dict of tensors and primitives saved with ``torch.save`` and loaded with
``weights_only=True`` (no arbitrary unpickling):

``{"format": 1, "state_dict": {...}, "meta": {bands, mean, std, arch, threshold, ...}}``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.bands import BANDS
from pipeline.errors import ModelError
from pipeline.io import atomic_path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Arch:
    """U-Net architecture (segmentation-models-pytorch ``Unet`` arguments)."""

    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    in_channels: int = len(BANDS)
    classes: int = 1


@dataclass(frozen=True)
class ModelMeta:
    """What travels with the weights.

    Attributes:
        bands: Band order the model was trained on (checked against every input raster).
        mean: Per-band mean of the training split, in stored DN units (reflectance x 10000).
        std: Per-band standard deviation, same units.
        arch: Architecture to rebuild the network.
        threshold: Probability threshold (validation-optimal when the config said ``auto``).
        data_digest: Digest of the training data (tiles manifest).
        extra: Free-form primitives (epochs, seed, metrics).
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch: Arch = field(default_factory=Arch)
    threshold: float = 0.5
    data_digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bands"] = list(self.bands)
        out["mean"] = [float(v) for v in self.mean]
        out["std"] = [float(v) for v in self.std]
        out["arch"]["decoder_channels"] = list(self.arch.decoder_channels)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelMeta:
        arch = dict(raw["arch"])
        arch["decoder_channels"] = tuple(arch["decoder_channels"])
        return cls(
            bands=tuple(raw["bands"]),
            mean=tuple(raw["mean"]),
            std=tuple(raw["std"]),
            arch=Arch(**arch),
            threshold=float(raw.get("threshold", 0.5)),
            data_digest=str(raw.get("data_digest", "")),
            extra=dict(raw.get("extra", {})),
        )


def build_unet(arch: Arch) -> nn.Module:
    """A segmentation-models-pytorch ``Unet`` emitting one logit per pixel (no weights loaded)."""
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=arch.encoder,
        encoder_weights=None,
        encoder_depth=arch.encoder_depth,
        decoder_channels=tuple(arch.decoder_channels),
        in_channels=arch.in_channels,
        classes=arch.classes,
    )


def save_model(path: str | Path, module: nn.Module, meta: ModelMeta) -> Path:
    """Write ``model.pt`` atomically (weights on CPU, metadata as primitives)."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_VERSION, "state_dict": state, "meta": meta.to_dict()}, tmp)
    return Path(path)


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Load ``model.pt`` with ``weights_only=True``; returns ``(module in eval mode, meta)``.

    Raises:
        ModelError: the file is missing, not a model file, or from an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; run `make train` first")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise ModelError(
            f"{path} is not a readable model file ({err}); re-run `make train`"
        ) from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION:
        raise ModelError(
            f"{path} is not a pipeline model file of format {FORMAT_VERSION}; "
            "re-run `make train` to export one"
        )
    meta = ModelMeta.from_dict(blob["meta"])
    module = build_unet(meta.arch)
    module.load_state_dict(blob["state_dict"])
    return module.to(device).eval(), meta


def check_bands(meta: ModelMeta, bands: Sequence[str], source: object) -> None:
    """Raise :class:`ModelError` unless ``bands`` equals the model's band order."""
    if tuple(bands) != tuple(meta.bands):
        raise ModelError(
            f"{source} has bands {list(bands)} but the model was trained on "
            f"{list(meta.bands)}; re-fetch with the model's band set or retrain"
        )


def normalize(x: np.ndarray | torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """Stored DN (bands, H, W) or (B, bands, H, W) -> float32 tensor standardized per band."""
    t = torch.as_tensor(
        np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x, dtype=torch.float32
    )
    shape = (-1, 1, 1) if t.ndim == 3 else (1, -1, 1, 1)
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=t.device).view(shape)
    std = torch.tensor(meta.std, dtype=torch.float32, device=t.device).view(shape)
    return (t - mean) / std


def denormalize(x: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """Inverse of :func:`normalize` (for counterfactual and baseline construction)."""
    shape = (-1, 1, 1) if x.ndim == 3 else (1, -1, 1, 1)
    mean = torch.tensor(meta.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(meta.std, dtype=x.dtype, device=x.device).view(shape)
    return x * std + mean
