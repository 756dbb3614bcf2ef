"""Reference inputs ``x'`` for path and perturbation methods, in normalized space."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from pipeline.errors import AttributionError

BaselineName = Literal["zeros", "median", "blur"]


def zeros_baseline(x: torch.Tensor) -> torch.Tensor:
    """All zeros in normalized space: every band at its training mean. ``(1, C, H, W)``."""
    return torch.zeros_like(x)


def median_baseline(x: torch.Tensor) -> torch.Tensor:
    """Each band at its median over the patch (the "scene median"). ``(1, C, H, W)``."""
    med = x.flatten(2).median(dim=2).values  # (1, C)
    return med[:, :, None, None].expand_as(x).contiguous()


def blur_baseline(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each band Gaussian-blurred by ``sigma`` pixels (reflecting edges). ``(1, C, H, W)``."""
    from scipy.ndimage import gaussian_filter

    array = x.detach().cpu().numpy().astype(np.float64)
    blurred = gaussian_filter(array, sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.as_tensor(blurred, dtype=x.dtype, device=x.device)


def make_baseline(name: str, x: torch.Tensor, *, blur_sigma: float = 8.0) -> torch.Tensor:
    """The named baseline for ``x`` ``(1, C, H, W)``.

    Raises:
        AttributionError: unknown name.
    """
    if name == "zeros":
        return zeros_baseline(x)
    if name == "median":
        return median_baseline(x)
    if name == "blur":
        return blur_baseline(x, blur_sigma)
    raise AttributionError(f"unknown baseline {name!r}; use zeros, median or blur")
