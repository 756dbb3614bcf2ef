"""The shortcut experiment: does the audit catch a model that learned "snow beside = farm"?

For each variant (``confounded``: snow planted beside every development farm; ``clean``: the
same snow scattered independently of farms) and each seed, every stage runs on the variant's
demo world (one world per variant, shared by all seeds: only the training seed changes). The
targets are the labelled farms that the planted truth says have snow beside them; a target
counts when the audit flags it for snow AND the counterfactual (snow removed) confirms it.

``--world shortcut`` (the default, ``configs/shortcut*.yaml``) plants the demo scene's farms
and snow with farm twins as look-alikes, so that a model can fit the confounded labels only by
the snow; ``--world demo`` runs the same experiment on ``make demo``'s world
(``configs/demo*.yaml``), whose look-alikes differ from farms in SWIR, so a model may learn
the farms' own pixels instead.

Accept when the confounded models are flagged and confirmed on at least 90 % of their
snow-bearing farm targets and the clean ones on at most 10 %.

Run: ``python -m pipeline.experiments.shortcut [--world shortcut|demo] [--seeds 0 1 2]
[--set key=value ...]`` (``make shortcut-experiment``). Writes
``<data_root>/experiments/shortcut/summary.json`` (``shortcut-demo`` for ``--world demo``) and
prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import add_overrides
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.io import write_json
from pipeline.paths import RunPaths, WorldPaths

log = logging.getLogger(__name__)

#: The experiment's worlds: variant -> config, per world.
WORLDS: dict[str, dict[str, str]] = {
    "shortcut": {"confounded": "configs/shortcut.yaml", "clean": "configs/shortcut-clean.yaml"},
    "demo": {"confounded": "configs/demo.yaml", "clean": "configs/demo-clean.yaml"},
}
VARIANTS: tuple[str, ...] = ("confounded", "clean")
#: Acceptance: (variant, bound, "min" or "max") on the flagged-and-confirmed fraction.
ACCEPT: dict[str, tuple[float, str]] = {"confounded": (0.9, "min"), "clean": (0.1, "max")}
#: Integrated Gradients steps in the experiment (Gauss-Legendre nodes: accurate at few steps;
#: the attribute stage records each map's completeness gap).
EXPERIMENT_IG_STEPS = 16


def experiment_overrides(
    base: RunConfig, variant: str, seed: int, prefix: str = "shortcut"
) -> list[str]:
    """``--set`` overrides of one (variant, seed) run, named ``<prefix>-<variant>-s<seed>``.

    The run name and training seed change; the world and the split keep the variant's seeds so
    every seed shares one world and one split; only label-farm targets are attributed (what the
    experiment scores), every one of them with Integrated Gradients (the demo caps IG to keep
    ``make demo`` short; the experiment needs IG on every target because the gradient methods
    miss saturated reliance) at :data:`EXPERIMENT_IG_STEPS` Gauss-Legendre steps; every target
    gets a counterfactual. The explanation sanity checks are left to the demo run: they do not
    decide a verdict and would triple the experiment's time.
    """
    world_seed = base.world.seed if base.world and base.world.seed is not None else base.run.seed
    out = [
        f"run.name={prefix}-{variant}-s{seed}",
        f"run.seed={seed}",
        f"tiles.split_seed={base.split_seed}",
        "attribute.targets=[label_farms]",
        "attribute.max_targets.integrated_gradients=null",
        f"attribute.ig_steps={EXPERIMENT_IG_STEPS}",
        "audit.counterfactual_scope=all",
        "audit.sanity_patches=0",
        "audit.faithfulness_patches=0",
        "fetch.alternates=1",
    ]
    if base.world is not None:
        out.append(f"world.seed={world_seed}")
    return out


def snow_bearing(truth_farms: pd.DataFrame) -> set[str]:
    """Farm ids the planted truth marks ``snow_beside`` (truthy; NaN counts as no)."""
    if "snow_beside" not in truth_farms or "farm_id" not in truth_farms:
        raise PipelineError(
            "the truth farms table lacks farm_id/snow_beside columns; rebuild "
            "the demo world (make world)"
        )
    flags = truth_farms["snow_beside"].fillna(False).astype(bool)
    return set(truth_farms.loc[flags, "farm_id"].astype(str))


def snow_planted(truth_farms: pd.DataFrame) -> set[str]:
    """Farm ids the world planted snow beside on purpose (``snow_planted``); a subset of
    :func:`snow_bearing`, which also counts farms within reach of a neighbour's snow."""
    if "snow_planted" not in truth_farms:
        return set()
    flags = truth_farms["snow_planted"].fillna(False).astype(bool)
    return set(truth_farms.loc[flags, "farm_id"].astype(str))


def outcomes(
    flags: pd.DataFrame, farm_ids: Iterable[str], *, variant: str, seed: int
) -> pd.DataFrame:
    """One row per snow-bearing labelled-farm target of one run.

    Args:
        flags: The run's ``audit/flags.csv``.
        farm_ids: Snow-bearing farm ids (:func:`snow_bearing`).

    Returns:
        Columns variant, seed, farm_id, verdict, flagged, confirmed, confirmed_without_log_odds
        (confirmed by the probability or mask-IoU test alone, the rule before the log-odds test
        existed), confirmed_without_placebo (flagged, and the counterfactual moved whatever the
        placebo did), prob_change, logit_change, placebo_logit_change, score_change,
        counterfactuals_agree (1 both counterfactuals agree, 0 not, NaN: no real background). Farms
        with no snow row (not attributed) are left out and counted by the caller.
    """
    ids = set(farm_ids)
    sel = flags[
        (flags["target"] == "label_farms")
        & (flags["cue"] == "snow")
        & flags["target_id"].astype(str).isin(ids)
    ]
    verdict = sel["verdict"].astype(str)
    moved_by = sel.get("moved_by", pd.Series("[]", index=sel.index)).fillna("[]").astype(str)
    fired = moved_by.map(lambda v: set(json.loads(v)))
    other_tests = fired.map(lambda v: bool(v - {"log_odds"}))
    flagged = verdict.isin(["confirmed", "unconfirmed"])
    return pd.DataFrame(
        {
            "variant": variant,
            "seed": seed,
            "farm_id": sel["target_id"].astype(str),
            "verdict": verdict,
            "flagged": flagged,
            "confirmed": verdict == "confirmed",
            "confirmed_without_log_odds": (verdict == "confirmed") & other_tests,
            "confirmed_without_placebo": flagged & fired.map(bool),
            "prob_change": pd.to_numeric(sel.get("prob_change"), errors="coerce"),
            "logit_change": pd.to_numeric(sel.get("logit_change"), errors="coerce"),
            "placebo_logit_change": pd.to_numeric(sel.get("placebo_logit_change"), errors="coerce"),
            "score_change": pd.to_numeric(sel.get("score_change"), errors="coerce"),
            "counterfactuals_agree": _agreement(sel),
        }
    ).reset_index(drop=True)


def _agreement(sel: pd.DataFrame) -> pd.Series:
    """1.0 where both counterfactuals ran and agree, 0.0 where they disagree, NaN where the
    real-background one did not run (no clear second acquisition)."""
    raw = sel.get("counterfactuals_agree", pd.Series(None, index=sel.index, dtype=object))
    text = raw.astype(str).str.lower()
    return text.map({"true": 1.0, "false": 0.0}).astype(float)


def _agree_fraction(grp: pd.DataFrame) -> dict[str, Any]:
    """Targets with both counterfactuals, and the share where they agree (None: none)."""
    if "counterfactuals_agree" not in grp:
        return {"temporal_targets": 0, "counterfactuals_agree_fraction": None}
    both = grp["counterfactuals_agree"].dropna()
    share = float(both.mean()) if len(both) else None
    return {"temporal_targets": len(both), "counterfactuals_agree_fraction": share}


def _mean(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(v.mean()) if len(v) else None


#: Subset reported beside all targets: farms whose nearest snow is at most this far (metres),
#: the range snow is planted at beside confounded farms.
NEAR_SNOW_M = 200.0


def _subsets(grp: pd.DataFrame) -> dict[str, Any]:
    """Targets and flagged-and-confirmed fraction among the farms snow was planted beside,
    and among those with snow within :data:`NEAR_SNOW_M` (planted or by chance)."""
    masks: dict[str, pd.Series] = {}
    if "snow_planted" in grp:
        masks["planted"] = grp["snow_planted"].fillna(False).astype(bool)
    if "distance_to_snow_m" in grp:
        masks["near"] = pd.to_numeric(grp["distance_to_snow_m"], errors="coerce") <= NEAR_SNOW_M
    out: dict[str, Any] = {}
    for name, mask in masks.items():
        sel = grp[mask]
        out[f"{name}_targets"] = len(sel)
        out[f"{name}_confirmed_fraction"] = float(sel["confirmed"].mean()) if len(sel) else None
    return out


def _fraction(grp: pd.DataFrame, column: str) -> float | None:
    return float(grp[column].mean()) if len(grp) and column in grp else None


def summarize(
    rows: pd.DataFrame,
    missing: dict[str, int] | None = None,
    test_iou: dict[tuple[str, int], float | None] | None = None,
) -> dict[str, Any]:
    """Per variant: seeds, targets, flagged fraction, confirmed fraction, mean changes, pass.

    ``confirmed_fraction`` is the share of targets both flagged and confirmed;
    ``confirmed_without_log_odds_fraction`` the same by the probability and mask-IoU tests
    alone, ``confirmed_without_placebo_fraction`` the same without the placebo control
    (reported so that the effect of each rule is visible). ``test_iou`` maps (variant, seed)
    to the model's pixel IoU on the test split, reported per seed.
    """
    out: dict[str, Any] = {}
    for variant, grp in rows.groupby("variant", sort=False):
        n = len(grp)
        conf = float(grp["confirmed"].mean()) if n else math.nan
        bound, kind = ACCEPT.get(str(variant), (math.nan, "min"))
        ok = (conf >= bound) if kind == "min" else (conf <= bound)
        out[str(variant)] = {
            "seeds": sorted(int(s) for s in grp["seed"].unique()),
            "targets": n,
            "flagged_fraction": float(grp["flagged"].mean()) if n else None,
            "confirmed_fraction": conf if n else None,
            "confirmed_without_log_odds_fraction": _fraction(grp, "confirmed_without_log_odds"),
            "confirmed_without_placebo_fraction": _fraction(grp, "confirmed_without_placebo"),
            "mean_prob_change": _mean(grp["prob_change"]),
            **_subsets(grp),
            "mean_logit_change": (_mean(grp["logit_change"]) if "logit_change" in grp else None),
            "mean_placebo_logit_change": (
                _mean(grp["placebo_logit_change"]) if "placebo_logit_change" in grp else None
            ),
            "mean_score_change": _mean(grp["score_change"]),
            **_agree_fraction(grp),
            "per_seed": {
                int(s): {
                    "targets": len(g),
                    "flagged_fraction": float(g["flagged"].mean()),
                    "confirmed_fraction": float(g["confirmed"].mean()),
                    "test_iou": (test_iou or {}).get((str(variant), int(s))),
                    **_agree_fraction(g),
                }
                for s, g in grp.groupby("seed")
            },
            "acceptance": f"confirmed_fraction {'>=' if kind == 'min' else '<='} {bound}",
            "accepted": bool(n and ok),
            "targets_without_attribution": (missing or {}).get(str(variant), 0),
        }
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The README table."""

    def pct(v: float | None) -> str:
        return "–" if v is None or not np.isfinite(v) else f"{100 * v:.0f} %"

    def num(v: float | None) -> str:
        return "–" if v is None or not np.isfinite(v) else f"{v:+.3f}"

    def num2(v: float | None) -> str:
        return "–" if v is None or not np.isfinite(v) else f"{v:.2f}"

    lines = [
        "| variant | seeds | snow-bearing farm targets | flagged | flagged + confirmed | "
        "same, without the log-odds test | same, without the placebo control | "
        "mean Δ probability | mean Δ log-odds | mean Δ log-odds, placebo | "
        f"snow within {NEAR_SNOW_M:.0f} m: targets, flagged + confirmed | accepted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        lines.append(
            f"| {variant} | {', '.join(map(str, s['seeds']))} | {s['targets']} | "
            f"{pct(s['flagged_fraction'])} | {pct(s['confirmed_fraction'])} | "
            f"{pct(s.get('confirmed_without_log_odds_fraction'))} | "
            f"{pct(s.get('confirmed_without_placebo_fraction'))} | "
            f"{num(s['mean_prob_change'])} | {num(s.get('mean_logit_change'))} | "
            f"{num(s.get('mean_placebo_logit_change'))} | "
            f"{s.get('near_targets', '–')}, {pct(s.get('near_confirmed_fraction'))} | "
            f"{'yes' if s['accepted'] else 'no'} ({s['acceptance']}) |"
        )
    lines += ["", "| variant | seed | targets | flagged | flagged + confirmed | test IoU |"]
    lines.append("|---|---|---|---|---|---|")
    for variant, s in summary.items():
        for seed, q in s.get("per_seed", {}).items():
            lines.append(
                f"| {variant} | {seed} | {q['targets']} | {pct(q.get('flagged_fraction'))} | "
                f"{pct(q['confirmed_fraction'])} | {num2(q.get('test_iou'))} |"
            )
    return "\n".join(lines)


def truth_farms(cfg: RunConfig) -> pd.DataFrame:
    """The planted farms of the run's demo world.

    Raises:
        ConfigError: the config has no world section.
        MissingArtifactError: the world's truth is missing (build it with ``make world``).
    """
    from pipeline.demo.truth import load_truth

    if cfg.world is None:
        raise ConfigError(
            "the shortcut experiment needs demo-world configs (with a world "
            "section); the planted truth decides what relies on snow"
        )
    return load_truth(WorldPaths(cfg.run.data_root, cfg.world.name).root).farms


def heldout_iou(paths: RunPaths) -> float | None:
    """The run's pixel IoU on the test split (``predict/metrics.json``), if recorded."""
    if not paths.metrics.is_file():
        return None
    value = json.loads(paths.metrics.read_text()).get("pixel", {}).get("test", {}).get("iou")
    return float(value) if isinstance(value, int | float) else None


def run_all_stages(cfg: RunConfig) -> RunPaths:
    """Build the world if needed, then run every stage (skipping up-to-date ones)."""
    from pipeline.demo import build_world
    from pipeline.stages import STAGES, run_stage

    build_world(cfg)
    for name in STAGES:
        run_stage(name, cfg)
    return RunPaths(cfg.run.data_root, cfg.run.name)


def experiment_name(world: str) -> str:
    """``shortcut`` for the experiment's own world, ``shortcut-<world>`` for another: the
    output folder under ``experiments/`` and the prefix of the run names."""
    return "shortcut" if world == "shortcut" else f"shortcut-{world}"


def run_experiment(
    seeds: Sequence[int],
    variants: Sequence[str],
    extra: Sequence[str],
    out: Path | None = None,
    world: str = "shortcut",
) -> dict[str, Any]:
    """Run every (variant, seed) on ``world``, audit, and write ``summary.json``."""
    if world not in WORLDS:
        raise ConfigError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")
    configs = WORLDS[world]
    frames: list[pd.DataFrame] = []
    missing: dict[str, int] = {}
    quality: dict[tuple[str, int], float | None] = {}
    data_root: Path | None = None
    for variant in variants:
        if variant not in configs:
            raise ConfigError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        base = load_config(configs[variant], extra)
        data_root = base.run.data_root
        for seed in seeds:
            cfg = load_config(
                configs[variant],
                [*extra, *experiment_overrides(base, variant, seed, experiment_name(world))],
            )
            log.info("shortcut experiment: %s seed %d -> run %s", variant, seed, cfg.run.name)
            paths = run_all_stages(cfg)
            truth = truth_farms(cfg)
            farms = snow_bearing(truth)
            flags = pd.read_csv(paths.flags, dtype={"target_id": str})
            rows = outcomes(flags, farms, variant=variant, seed=seed)
            rows["snow_planted"] = rows["farm_id"].isin(snow_planted(truth))
            distance = truth.set_index(truth["farm_id"].astype(str))["distance_to_snow_m"]
            rows["distance_to_snow_m"] = rows["farm_id"].map(distance)
            missing[variant] = missing.get(variant, 0) + len(farms - set(rows["farm_id"]))
            frames.append(rows)
            quality[(variant, seed)] = heldout_iou(paths)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary = summarize(rows, missing, quality)
    target = out or (data_root or Path("data")) / "experiments" / experiment_name(world)
    write_json(target / "summary.json", summary)
    with (target / "targets.csv").open("w") as fh:
        rows.to_csv(fh, index=False)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.experiments.shortcut", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--world",
        choices=list(WORLDS),
        default="shortcut",
        help="shortcut: farm twins as look-alikes (configs/shortcut*.yaml); "
        "demo: make demo's world (configs/demo*.yaml)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    add_overrides(parser, "override for every run (repeatable)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default <data_root>/experiments/shortcut, or shortcut-<world>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = run_experiment(args.seeds, args.variants, args.overrides, args.out, args.world)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(markdown_table(summary))
    return 0 if all(s["accepted"] for s in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
