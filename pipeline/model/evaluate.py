"""Evaluation: pixel metrics, a threshold sweep, object matching at IoU >= 0.5, and a plot.

Everything here takes arrays and returns numbers or arrays; the predict stage does the I/O.
Objects are 4-connected components of a binary mask on one patch grid (a farm cut by a patch
edge counts once per patch it appears in).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

#: Number of thresholds the sweep evaluates on ``(0, 1)``.
SWEEP_BINS = 200


@dataclass
class PixelCounts:
    """Confusion counts of the positive class; ratios are 0 when undefined (no pixels)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return float(num) / den if den else 0.0

    @property
    def iou(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    def as_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "iou": self.iou,
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
        }


def pixel_counts(
    pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None
) -> PixelCounts:
    """Confusion counts of boolean ``pred`` vs ``truth`` (same shape), over ``valid`` pixels."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if valid is not None:
        pred, truth = pred[valid], truth[valid]
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return PixelCounts(tp, fp, fn, int(pred.size) - tp - fp - fn)


@dataclass
class ThresholdSweep:
    """Histograms of predicted probabilities for positive and negative pixels.

    ``counts(t)`` gives the confusion counts at threshold ``t`` (``prob >= t`` is positive)
    for thresholds on a grid of :data:`SWEEP_BINS` steps, from streaming updates.
    """

    bins: int = SWEEP_BINS
    pos: np.ndarray = field(default_factory=lambda: np.zeros(SWEEP_BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(SWEEP_BINS, np.int64))

    def update(self, prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add pixels: ``prob`` in [0, 1] and boolean ``truth`` of the same shape."""
        prob, truth = np.asarray(prob, np.float64), np.asarray(truth, bool)
        keep = np.isfinite(prob) if valid is None else (valid & np.isfinite(prob))
        idx = np.clip((prob[keep] * self.bins).astype(np.int64), 0, self.bins - 1)
        t = truth[keep]
        self.pos += np.bincount(idx[t], minlength=self.bins)
        self.neg += np.bincount(idx[~t], minlength=self.bins)

    @property
    def thresholds(self) -> np.ndarray:
        """Candidate thresholds ``k / bins`` for ``k = 1 .. bins - 1``."""
        return np.arange(1, self.bins) / self.bins

    def curves(self) -> dict[str, np.ndarray]:
        """IoU, F1, precision and recall at every candidate threshold."""
        tp = np.cumsum(self.pos[::-1])[::-1][1:]  # pixels in bins >= k
        fp = np.cumsum(self.neg[::-1])[::-1][1:]
        fn = self.pos.sum() - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {
                "iou": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 0.0),
                "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
                "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
                "recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            }
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    def best(self, metric: str = "iou", default: float = 0.5) -> tuple[float, float]:
        """``(threshold, value)`` maximizing ``metric``; ``(default, 0)`` without positives.

        Ties go to the threshold nearest 0.5.
        """
        if self.pos.sum() == 0:
            return default, 0.0
        values = self.curves()[metric]
        top = values.max()
        candidates = self.thresholds[np.isclose(values, top)]
        threshold = float(candidates[np.argmin(np.abs(candidates - 0.5))])
        return threshold, float(top)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean mask: ``(labels int32 (H, W), count)``."""
    labels, count = ndimage.label(np.asarray(mask, bool))
    return labels.astype(np.int32), int(count)


def remove_small(labels: np.ndarray, min_pixels: int) -> tuple[np.ndarray, int]:
    """Drop components smaller than ``min_pixels`` and renumber ``1..n``."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_pixels, 1)
    keep[0] = False
    remap = np.zeros(sizes.size, np.int32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return remap[labels], int(keep.sum())


@dataclass(frozen=True)
class ObjectMatch:
    """One-to-one matches between predicted and true components.

    Attributes:
        pairs: ``(pred_label, truth_label, iou)`` for every match.
        unmatched_pred: Predicted labels without a match (false positives).
        unmatched_truth: True labels without a match (missed objects).
        n_pred: Number of predicted objects.
        n_truth: Number of true objects.
    """

    pairs: tuple[tuple[int, int, float], ...]
    unmatched_pred: tuple[int, ...]
    unmatched_truth: tuple[int, ...]
    n_pred: int
    n_truth: int


def match_objects(
    pred_labels: np.ndarray, truth_labels: np.ndarray, iou_min: float = 0.5
) -> ObjectMatch:
    """Greedy one-to-one matching of labelled components by descending IoU >= ``iou_min``.

    Args:
        pred_labels: ``(H, W)`` int labels of predicted objects (0 = background).
        truth_labels: ``(H, W)`` int labels of true objects, same grid.
        iou_min: Smallest IoU that counts as a match.
    """
    n_pred, n_truth = int(pred_labels.max(initial=0)), int(truth_labels.max(initial=0))
    pred_area = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    truth_area = np.bincount(truth_labels.ravel(), minlength=n_truth + 1)
    both = (pred_labels > 0) & (truth_labels > 0)
    pairs_flat = pred_labels[both].astype(np.int64) * (n_truth + 1) + truth_labels[both]
    keys, inter = np.unique(pairs_flat, return_counts=True)
    candidates = []
    for key, n in zip(keys.tolist(), inter.tolist(), strict=True):
        p, t = divmod(key, n_truth + 1)
        iou = n / (pred_area[p] + truth_area[t] - n)
        if iou >= iou_min:
            candidates.append((iou, p, t))
    used_p: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for iou, p, t in sorted(candidates, reverse=True):
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            pairs.append((p, t, float(iou)))
    return ObjectMatch(
        pairs=tuple(pairs),
        unmatched_pred=tuple(i for i in range(1, n_pred + 1) if i not in used_p),
        unmatched_truth=tuple(i for i in range(1, n_truth + 1) if i not in used_t),
        n_pred=n_pred,
        n_truth=n_truth,
    )


@dataclass
class ObjectCounts:
    """Object-level counts: matched pairs, predicted and true objects."""

    matched: int = 0
    n_pred: int = 0
    n_truth: int = 0

    def add(self, match: ObjectMatch) -> None:
        self.matched += len(match.pairs)
        self.n_pred += match.n_pred
        self.n_truth += match.n_truth

    def as_dict(self) -> dict[str, float | int]:
        return {
            "matched": self.matched,
            "n_pred": self.n_pred,
            "n_truth": self.n_truth,
            "precision": self.matched / self.n_pred if self.n_pred else 0.0,
            "recall": self.matched / self.n_truth if self.n_truth else 0.0,
        }


def resolve_threshold(
    setting: float | Literal["model", "auto"], model_threshold: float, val_sweep: ThresholdSweep
) -> tuple[float, str]:
    """``(threshold, rule)``: a configured number, the model's, or the validation-optimal IoU.

    Args:
        setting: ``predict.threshold``.
        model_threshold: The threshold exported with the model.
        val_sweep: Probability histograms of the validation split (for ``auto``).
    """
    if setting == "model":
        return float(model_threshold), "model"
    if setting == "auto":
        if val_sweep.pos.sum() == 0:
            log.warning("no farm pixels in the validation split; using the model's threshold")
            return float(model_threshold), "model (no validation positives)"
        return val_sweep.best("iou")[0], "validation-optimal IoU"
    return float(setting), "config"


def rounded(d: Mapping[str, Any], digits: int = 5) -> dict[str, Any]:
    """``d`` with its float values rounded to ``digits`` (for JSON reports)."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def split_metrics(
    pixel: Mapping[str, PixelCounts],
    objects: Mapping[str, ObjectCounts],
    sweeps: Mapping[str, ThresholdSweep],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rounded pixel and object metrics of every split that has scored pixels.

    Returns:
        ``(pixel metrics by split, object metrics by split)``, same splits in the same order.
    """
    pixel_out = {
        s: rounded(pixel[s].as_dict()) for s in sweeps if sweeps[s].pos.sum() + sweeps[s].neg.sum()
    }
    return pixel_out, {s: rounded(objects[s].as_dict()) for s in pixel_out}


def plot_evaluation(
    sweeps: Mapping[str, ThresholdSweep], threshold: float, metrics: Mapping[str, Any], path: Path
) -> Path:
    """A small PNG: IoU and F1 against threshold per split, and precision-recall curves.

    Args:
        sweeps: Split name -> its sweep.
        threshold: The threshold in use (a vertical line).
        metrics: Split name -> pixel metrics at ``threshold`` (for the title).
        path: Destination PNG (written as given; the caller makes it atomic).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for split, sweep in sweeps.items():
        if sweep.pos.sum() + sweep.neg.sum() == 0:
            continue
        curves = sweep.curves()
        (line,) = ax1.plot(sweep.thresholds, curves["iou"], label=f"{split} IoU")
        ax1.plot(
            sweep.thresholds, curves["f1"], ls="--", color=line.get_color(), label=f"{split} F1"
        )
        ax2.plot(curves["recall"], curves["precision"], color=line.get_color(), label=split)
    ax1.axvline(threshold, color="grey", lw=0.8)
    ax1.set(xlabel="threshold", ylabel="pixel metric", ylim=(0, 1), xlim=(0, 1))
    ax2.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), xlim=(0, 1.02))
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    title = "  ".join(f"{s} IoU {m['iou']:.2f}" for s, m in metrics.items() if "iou" in m)
    fig.suptitle(f"threshold {threshold:.3f}   {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
