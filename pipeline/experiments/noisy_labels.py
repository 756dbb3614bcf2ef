"""The noisy-label experiment: does one round of map -> triage -> retrain help?

For each seed, on the demo world (its OSM file omits some planted farms, holds ghost labels and
a shifted outline):

1. **baseline**: labels, fetch, tiles, train, map, predict (and, with ``--full``, attribute and
   audit, which give the triage attribution and cues), then triage;
2. **retraining**: the same config and seed with ``train.ignore_labels`` (suspect labels and
   strong candidates left out of the loss) and ``labels.hard_negatives`` (the mapped objects
   the triage judges no farm become negative patches, in training blocks), both reading the
   baseline's ``triage/review.gpkg``; then labels, fetch, tiles, train, map and predict.

Each model is scored the same way: pixel IoU on the test split (``predict/metrics.json``; the
retraining adds patches in training blocks only, so both test splits hold the same tiles, which
the summary checks), and its wall-to-wall map against the planted truth
(:func:`pipeline.triage.truth.score_map`): object precision (mapped objects on a planted farm),
farm recall, and the unmapped farms found. The truth is used for scoring only.

Accept (issue 18) when, over the seeds, the retraining does not lower the mean test IoU and
finds more unmapped farms than the baseline; the object precision is reported beside it.

Run: ``python -m pipeline.experiments.noisy_labels [--seeds 0 1 2] [--full] [--set key=value]``
(``make noisy-labels-experiment``). Writes ``<data_root>/experiments/noisy-labels/summary.json``
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from pipeline.cli import add_overrides
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.experiments.shortcut import heldout_iou
from pipeline.io import write_json
from pipeline.paths import RunPaths, WorldPaths

log = logging.getLogger(__name__)

CONFIG = "configs/demo.yaml"
#: Stages of the baseline (``--full`` adds attribute and audit before triage) and retraining.
BASELINE = ("labels", "fetch", "tiles", "train", "map", "predict", "triage")
FULL = ("labels", "fetch", "tiles", "train", "map", "predict", "attribute", "audit", "triage")
RETRAIN = ("labels", "fetch", "tiles", "train", "map", "predict")


def run_names(seed: int, prefix: str = "noisy") -> tuple[str, str]:
    """Baseline and retraining run names of ``seed``."""
    return f"{prefix}-base-s{seed}", f"{prefix}-retrain-s{seed}"


def baseline_overrides(seed: int, prefix: str = "noisy") -> list[str]:
    """The baseline run of ``seed`` (the split keeps the config's ``tiles.split_seed``)."""
    return [f"run.name={run_names(seed, prefix)[0]}", f"run.seed={seed}"]


def retrain_overrides(seed: int, review: Path, prefix: str = "noisy") -> list[str]:
    """The retraining of ``seed``: both options read the baseline's review file."""
    return [
        f"run.name={run_names(seed, prefix)[1]}",
        f"run.seed={seed}",
        f"train.ignore_labels.review={review}",
        f"labels.hard_negatives.review={review}",
    ]


def run_stages(cfg: RunConfig, names: Sequence[str]) -> RunPaths:
    """Build the world if needed, then run ``names`` in order (skipping up-to-date ones)."""
    from pipeline.demo import build_world
    from pipeline.stages import run_stage

    build_world(cfg)
    for name in names:
        run_stage(name, cfg)
    return RunPaths(cfg.run.data_root, cfg.run.name)


def test_split_ids(paths: RunPaths) -> list[str]:
    """Patch ids of the run's test split (``tiles/index.gpkg``)."""
    import pyogrio

    frame = pyogrio.read_dataframe(paths.tiles_index, layer="tiles", read_geometry=False)
    return sorted(frame.loc[frame["split"] == "test", "patch_id"].astype(str))


def measure(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """Test IoU and the map scored against the planted truth, with what the run left out."""
    from pipeline.demo.truth import load_truth
    from pipeline.manifest import Manifest
    from pipeline.triage.truth import score_map

    if cfg.world is None:
        raise ConfigError("the noisy-label experiment needs a demo-world config (world:)")
    truth = load_truth(WorldPaths(cfg.run.data_root, cfg.world.name).root)
    objects = gpd.read_file(paths.map_farms, layer="farms")
    train = Manifest.read(paths.manifest("train")).summary
    plan = Manifest.read(paths.manifest("labels")).summary.get("plan", {})
    return {
        "test_iou": heldout_iou(paths),
        "map": score_map(objects, truth.farms).as_dict(),
        "ignored": train.get("ignore_labels"),
        "map_hard_negatives": plan.get("map_hard_negatives"),
        "test_tiles": test_split_ids(paths),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds before and after, and the acceptance (see the module docstring)."""
    out: dict[str, Any] = {"seeds": sorted(per_seed), "per_seed": per_seed}
    for when in ("before", "after"):
        rows = [r[when] for r in per_seed.values()]
        out[when] = {
            "test_iou": _mean([r["test_iou"] for r in rows]),
            "precision": _mean([r["map"]["precision"] for r in rows]),
            "recall": _mean([r["map"]["recall"] for r in rows]),
            "unmapped_found": int(sum(r["map"]["unmapped_found"] for r in rows)),
            "unmapped": int(sum(r["map"]["unmapped"] for r in rows)),
        }
    before, after = out["before"], out["after"]
    iou_kept = (
        before["test_iou"] is not None
        and after["test_iou"] is not None
        and after["test_iou"] >= before["test_iou"]
    )
    out["same_test_tiles"] = all(
        r["before"]["test_tiles"] == r["after"]["test_tiles"] for r in per_seed.values()
    )
    out["accepted"] = bool(iou_kept and after["unmapped_found"] > before["unmapped_found"])
    out["acceptance"] = "mean test IoU not lower and more unmapped farms found after"
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The README table: one row per seed and model, then the means."""

    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    lines = [
        "| seed | model | test IoU | objects | on a farm | object precision | farm recall | "
        "unmapped farms found | ignored pixels (train) | hard-negative patches |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, row in summary["per_seed"].items():
        for when, name in (("before", "baseline"), ("after", "retrained")):
            r, m = row[when], row[when]["map"]
            ignored = (r.get("ignored") or {}).get("per_split", {}).get("train", {}).get("pixels")
            lines.append(
                f"| {seed} | {name} | {num(r['test_iou'])} | {m['objects']} | {m['on_farm']} | "
                f"{num(m['precision'])} | {num(m['recall'])} | "
                f"{m['unmapped_found']} of {m['unmapped']} | {ignored or '–'} | "
                f"{'–' if r.get('map_hard_negatives') is None else r['map_hard_negatives']} |"
            )
    for when, name in (("before", "baseline"), ("after", "retrained")):
        s = summary[when]
        lines.append(
            f"| mean | {name} | {num(s['test_iou'])} | | | {num(s['precision'])} | "
            f"{num(s['recall'])} | {s['unmapped_found']} of {s['unmapped']} | | |"
        )
    lines.append("")
    lines.append(
        f"accepted: {'yes' if summary['accepted'] else 'no'} ({summary['acceptance']}); "
        f"same test tiles before and after: {summary['same_test_tiles']}"
    )
    return "\n".join(lines)


def run_experiment(
    seeds: Sequence[int], extra: Sequence[str], out: Path | None = None, full: bool = False
) -> dict[str, Any]:
    """Baseline and retraining for every seed; writes ``summary.json`` (and returns it)."""
    per_seed: dict[int, dict[str, Any]] = {}
    data_root = load_config(CONFIG, extra).run.data_root
    target = out or data_root / "experiments" / "noisy-labels"
    for seed in seeds:
        base_cfg = load_config(CONFIG, [*extra, *baseline_overrides(seed)])
        log.info("noisy-label experiment: seed %d baseline -> %s", seed, base_cfg.run.name)
        base = run_stages(base_cfg, FULL if full else BASELINE)
        re_cfg = load_config(CONFIG, [*extra, *retrain_overrides(seed, base.triage_review)])
        log.info("noisy-label experiment: seed %d retraining -> %s", seed, re_cfg.run.name)
        again = run_stages(re_cfg, RETRAIN)
        per_seed[seed] = {"before": measure(base_cfg, base), "after": measure(re_cfg, again)}
        write_json(target / "summary.json", summarize(per_seed))  # partial results survive
    summary = summarize(per_seed)
    write_json(target / "summary.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.experiments.noisy_labels",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--full", action="store_true", help="attribute and audit the baselines before triage"
    )
    add_overrides(parser, "override for every run (repeatable)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default <data_root>/experiments/noisy-labels"
    )
    parser.add_argument(
        "--table", type=Path, default=None, help="print the table of a written summary.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    try:
        summary = run_experiment(args.seeds, args.overrides, args.out, args.full)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(markdown_table(summary))
    return 0 if summary["accepted"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
