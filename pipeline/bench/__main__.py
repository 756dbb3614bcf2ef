"""``python -m pipeline.bench [NAME|all]``: run the benchmarks of BENCHES, save JSON.

Each benchmark module exposes ``main() -> dict``; results go to ``data/bench/<name>.json``
with the machine's description, so figures from different runs can be compared as ratios.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from pipeline.io import write_json

BENCHES = ("fetch", "model", "attribution", "map", "map_scene")


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    import torch

    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__)
    parser.add_argument("which", nargs="?", default="all", choices=(*BENCHES, "all"))
    parser.add_argument("--out", type=Path, default=Path("data/bench"))
    args = parser.parse_args(argv)
    names = BENCHES if args.which == "all" else (args.which,)
    for name in names:
        module = importlib.import_module(f"pipeline.bench.{name}")
        start = time.perf_counter()
        result = module.main()
        payload = {
            "bench": name,
            "machine": machine(),
            "seconds": time.perf_counter() - start,
            "result": result,
        }
        write_json(args.out / f"{name}.json", payload)
        print(json.dumps({name: result}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
