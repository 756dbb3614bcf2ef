"""What a retraining takes from an earlier run's label triage (``triage/review.gpkg``).

Two subsections, both off by default and both reading the review file of an *earlier* run
(so the stages keep one direction: triage comes after train):

- ``train.ignore_labels`` (:class:`IgnoreLabelsConfig`): suspect labels and strong candidates
  are left out of the loss, an ignore mask, never a relabel.
- ``labels.hard_negatives`` (:class:`HardNegativesConfig`): mapped objects that are not farms by
  the evidence become negative patches of the plan, in training blocks only.

Either may be given as the review file's path alone (``--set train.ignore_labels=data/runs/
demo/triage/review.gpkg``), which keeps every other value at its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section

SuspectReasonName = Literal["not_found", "confirmed_cue", "surroundings", "outline_mismatch"]
SplitName = Literal["train", "val", "test"]


def review_shorthand(data: Any) -> Any:
    """A bare path stands for ``{review: path}``."""
    return {"review": data} if isinstance(data, str | Path) else data


class IgnoreLabelsConfig(Section):
    """``train.ignore_labels``: pixels left out of the loss, from an earlier run's triage.

    Ignored pixels contribute nothing to BCE and Dice (their gradient is zero), nor to the
    validation loss, the checkpoint choice or the validation-optimal threshold. The metrics
    the train and predict stages report count every pixel, so a retraining's metrics compare
    with the earlier run's on the same labels. Under DDP each process averages BCE over its
    own unignored pixels (exact with one process).

    Attributes:
        review: The earlier run's ``triage/review.gpkg`` (layers ``candidates``, ``suspects``).
        suspect_reasons: Suspect labels of these reasons are ignored (their outline).
        min_candidate_score: Candidates (mapped farms with no OSM farm) scoring at least this
            are ignored, unless the audit confirmed a spurious cue on them: a farm OSM may miss
            must not teach "not a farm". Above 1: none.
        min_candidate_focus: ... nor when their attribution focus (share inside over inside +
            ring; unattributed ones pass) is below this: the evidence lies around them. With
            the defaults of ``labels.hard_negatives`` the two selections never share a
            candidate.
        buffer_m: Every ignored outline is widened by this many metres (outline errors).
    """

    review: Path
    suspect_reasons: tuple[SuspectReasonName, ...] = (
        "not_found",
        "confirmed_cue",
        "surroundings",
        "outline_mismatch",
    )
    min_candidate_score: float = Field(default=0.1, ge=0.0)
    min_candidate_focus: float = Field(default=0.3, ge=0.0, le=1.0)
    buffer_m: float = Field(default=20.0, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return review_shorthand(data)


class HardNegativesConfig(Section):
    """``labels.hard_negatives``: negative patches on the earlier map's non-farms.

    A candidate of the review file (a mapped farm with no OSM farm) is a hard negative when
    its evidence says it is no farm: a confirmed spurious cue, attribution mostly outside it
    (``focus`` below ``max_focus``), or a score below ``max_score``. Each becomes one patch
    centred on it and kept inside its split block. A patch that shows labelled farms carries
    them in its mask and joins their split group (as the tiles stage groups patches); it is
    refused when it would join two groups (moving one of them to another split) or end up in
    a split not in ``splits``. These patches come after every other patch of the plan, which
    stays as it was with the same splits, so the validation and test tiles of a retraining are
    those of the earlier run.

    Attributes:
        review: The earlier run's ``triage/review.gpkg``.
        max_score: Candidates scoring below this are hard negatives.
        max_focus: Candidates whose attribution focus (share inside over inside + ring) is
            below this are hard negatives (unattributed ones are judged by score alone).
        confirmed_cue: Candidates with a confirmed spurious cue are hard negatives.
        max_patches: At most this many patches, weakest evidence first.
        splits: Splits a hard negative may fall in (default: training blocks only).
        split_fractions: The split shares; defaults to ``tiles.split_fractions``.
        split_seed: The split seed; defaults to ``tiles.split_seed``, else ``run.seed``.
        block_size_m: The split blocks; defaults to ``tiles.block_size_m``.
    """

    review: Path
    max_score: float = Field(default=0.1, ge=0.0)
    max_focus: float = Field(default=0.3, ge=0.0, le=1.0)
    confirmed_cue: bool = True
    max_patches: int = Field(default=100, ge=0)
    splits: tuple[SplitName, ...] = ("train",)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = Field(default=0, ge=0)
    block_size_m: float = Field(default=10_000.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return review_shorthand(data)
