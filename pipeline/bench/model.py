"""Model benchmark: training and inference tiles/s for 10 x 256 x 256 tiles, FLOPs, % of peak.

Models: the default ``resnet34`` U-Net (depth 5) and the demo's ``resnet18`` depth-4 U-Net.
On CUDA: bf16 autocast, channels-last, cuDNN autotuning, large batches. On CPU: fp32.

* ``train_tiles_per_s``: AdamW steps on a BCE + Dice loss (forward, backward, update).
* ``infer_tiles_per_s``: forward + sigmoid under ``inference_mode``.
* ``cpu_seconds_per_tile``: process CPU time per tile (on a shared, oversubscribed CPU the
  wall-clock figures understate the machine; CPU time / cores is the uncontended estimate).
* ``gflops_per_tile``: forward FLOPs of one tile counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2); training is
  taken as 3x forward (backward ~ 2x forward).
* ``map_chunk``: the map's per-chunk prediction alone (the blended sliding window of
  :func:`pipeline.model.window.predict_array` over one chunk, 2048 px core (1024 on CPU) + 64 px
  halo, window 256 overlap 64, the demo architecture): seconds per chunk and km²/s of chunk
  core at 10 m. Reading, compositing and writing the chunk are measured by the map bench.
* ``fraction_of_peak``: achieved FLOP/s over the device peak. GPU peak: dense bf16 tensor-core
  FLOP/s from the vendor's data sheet for known names. CPU peak: cores x clock x FP32
  FLOPs/cycle/core, where FLOPs/cycle comes from the ISA flags in ``/proc/cpuinfo`` (two
  256-bit FMA pipes = 32 with AVX2+FMA, 64 with AVX-512, 16 with AVX, 8 otherwise) and the
  clock is the highest ``cpu MHz`` listed (no turbo knowledge: an upper-bound-ish estimate).
"""

from __future__ import annotations

import os

# Busy-waiting OpenMP threads collapse throughput on shared CPUs; must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.bands import BANDS
from pipeline.model.io import Arch, ModelMeta, build_unet
from pipeline.model.module import SegLoss
from pipeline.model.window import Predictor, WindowSpec, predict_array

#: Dense bf16 tensor-core peak FLOP/s by device-name fragment (vendor data sheets).
GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}

MODELS = {
    "resnet34": Arch("resnet34", 5, (256, 128, 64, 32, 16)),
    "demo_resnet18_d4": Arch("resnet18", 4, (64, 32, 16, 8)),
}


def cpu_peak_flops() -> tuple[float, str]:
    """``(FP32 FLOP/s, how it was estimated)`` for the CPUs this process may use."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if text else set()
    mhz = max((float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)), default=0)
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 (2 FMA x 16 fp32 x 2)"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2+FMA (2 FMA x 8 fp32 x 2)"
    elif "avx" in flags:
        per_cycle, isa = 16, "AVX"
    else:
        per_cycle, isa = 8, "SSE"
    cores = len(os.sched_getaffinity(0))
    peak = cores * mhz * 1e6 * per_cycle
    return peak, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle ({isa})"


def gpu_peak_flops(name: str) -> tuple[float | None, str]:
    """Dense bf16 peak of a known GPU, else ``None``."""
    for key, value in GPU_BF16_PEAK.items():
        if key in name:
            return value, f"data-sheet dense bf16 peak for {key}"
    return None, f"unknown GPU {name!r}: no peak on record"


def forward_flops(model: nn.Module, size: int, device: torch.device) -> float:
    """FLOPs of one forward pass on one ``10 x size x size`` tile."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 10, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Any, device: torch.device, batch: int, min_iters: int, budget_s: float) -> dict:
    step()  # warm-up (cuDNN autotune, oneDNN primitive creation)
    step()
    _sync(device)
    iters, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while iters < min_iters or (time.perf_counter() - wall0) < budget_s * 0.5:
        step()
        iters += 1
        if time.perf_counter() - wall0 > budget_s:
            break
    _sync(device)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    tiles = iters * batch
    return {
        "tiles_per_s": tiles / wall,
        "cpu_seconds_per_tile": cpu / tiles,
        "batch": batch,
        "iterations": iters,
    }


def bench_arch(
    arch: Arch,
    device: torch.device,
    *,
    size: int = 256,
    train_batch: int,
    infer_batch: int,
    budget_s: float,
) -> dict[str, Any]:
    """Train and inference throughput of one architecture on ``device``."""
    cuda = device.type == "cuda"
    model = build_unet(arch).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    flops = forward_flops(model.eval(), size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    x = torch.randn(infer_batch, 10, size, size, device=device).contiguous(memory_format=fmt)

    def infer() -> None:
        with torch.inference_mode(), autocast:
            torch.sigmoid(model(x))

    model.eval()
    inference = _timed(infer, device, infer_batch, 3, budget_s)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda or None)
    loss_fn = SegLoss("bce+dice")
    xt = torch.randn(train_batch, 10, size, size, device=device).contiguous(memory_format=fmt)
    yt = (torch.rand(train_batch, 1, size, size, device=device) > 0.8).float()

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()

    training = _timed(train, device, train_batch, 3, budget_s)
    if cuda:
        peak, how = gpu_peak_flops(torch.cuda.get_device_name(device))
    else:
        peak, how = cpu_peak_flops()
    out: dict[str, Any] = {
        "arch": {
            "encoder": arch.encoder,
            "depth": arch.encoder_depth,
            "decoder": list(arch.decoder_channels),
        },
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops_per_tile_forward": flops / 1e9,
        "gflops_per_tile_train": 3 * flops / 1e9,
        "infer": inference,
        "train": training,
        "precision": "bf16-mixed" if cuda else "32-true",
        "peak_flops": peak,
        "peak_how": how,
    }
    if peak:
        out["infer"]["fraction_of_peak"] = inference["tiles_per_s"] * flops / peak
        out["train"]["fraction_of_peak"] = training["tiles_per_s"] * 3 * flops / peak
    return out


def bench_map_chunk(
    arch: Arch, device: torch.device, *, chunk_px: int, halo_px: int, batch: int, repeats: int = 2
) -> dict[str, Any]:
    """Seconds and km²/s of one map chunk's blended sliding-window prediction on ``device``."""
    meta = ModelMeta(BANDS, tuple([1500.0] * 10), tuple([800.0] * 10), arch)
    predictor = Predictor(build_unet(arch), meta, device, batch_size=batch)
    side = chunk_px + 2 * halo_px
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 6000, size=(len(BANDS), side, side), dtype=np.uint16)
    spec = WindowSpec(window=256, overlap=64, batch_size=batch)
    predict_array(dn[:, :512, :512], predictor, spec)  # warm-up (cuDNN autotuning, allocator)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        predict_array(dn, predictor, spec)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    core_km2 = (chunk_px * 10.0 / 1000.0) ** 2
    return {
        "chunk_px": chunk_px,
        "halo_px": halo_px,
        "batch": batch,
        "seconds_per_chunk": round(best, 3),
        "core_km2": core_km2,
        "km2_per_s": round(core_km2 / best, 2),
    }


def main(*, size: int = 256, budget_s: float | None = None) -> dict[str, Any]:
    """Benchmark every model of :data:`MODELS` on the best device; returns a JSON-able dict."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    budget = budget_s if budget_s is not None else (10.0 if cuda else 20.0)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "tile": [10, size, size],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    for name, arch in MODELS.items():
        results[name] = bench_arch(
            arch,
            device,
            size=size,
            train_batch=64 if cuda else 4,
            infer_batch=256 if cuda else 8,
            budget_s=budget,
        )
    results["map_chunk"] = bench_map_chunk(
        MODELS["demo_resnet18_d4"],
        device,
        chunk_px=2048 if cuda else 1024,
        halo_px=64,
        batch=64 if cuda else 8,
        repeats=3 if cuda else 1,
    )
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
