"""PNG quicklooks for the report: true colour beside the attribution overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def stretch_rgb(rgb_dn: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` reflectance DN -> ``(H, W, 3)`` float in [0, 1], 2-98 % stretch per band."""
    out = np.zeros((*rgb_dn.shape[1:], 3), dtype=np.float64)
    for i, band in enumerate(rgb_dn.astype(np.float64)):
        valid = band[band > 0]
        lo, hi = np.percentile(valid, (2, 98)) if valid.size else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
    return out


def write_quicklook(
    path: str | Path,
    rgb_dn: np.ndarray,
    aggregate: np.ndarray,
    *,
    signed: bool,
    mask: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Two panels: RGB, and RGB with the aggregate map over it (diverging ``RdBu_r`` centred on
    zero for signed maps, ``magma`` for magnitudes), the target outlined.

    Args:
        path: PNG destination (written atomically).
        rgb_dn: ``(3, H, W)`` B04, B03, B02 in stored DN.
        aggregate: ``(H, W)`` attribution map (NaN = no data).
        signed: Whether the map has a meaningful sign.
        mask: ``(H, W)`` bool target region to outline.
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = stretch_rgb(rgb_dn)
    finite = np.abs(aggregate[np.isfinite(aggregate)])
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3), dpi=80)
    axes[0].imshow(rgb)
    axes[0].set_title("RGB (B04 B03 B02)")
    axes[1].imshow(rgb * 0.6)
    if signed:
        im = axes[1].imshow(aggregate, cmap="RdBu_r", vmin=-vmax, vmax=vmax, alpha=0.75)
    else:
        im = axes[1].imshow(aggregate, cmap="magma", vmin=0, vmax=vmax, alpha=0.75)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title("attribution" + (" (signed)" if signed else " (magnitude)"))
    for ax in axes:
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
