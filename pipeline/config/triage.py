"""``triage:`` section: the model's map against the labels, as review tasks for people."""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import Section


class TriageConfig(Section):
    """How mapped farms and labels are compared and ranked.

    Attributes:
        overlap_max: A mapped farm is a candidate (missing from OSM) when labels cover less
            than this share of its area.
        found_share: A label counts as found when mapped farms cover at least this share of
            it; less is ``not_found``.
        surroundings_share: A found label whose attribution puts less than this share of its
            mass inside the polygon (the rest on the ring and beyond) is found "from its
            surroundings".
        half_area_ha: Area at which a candidate's size term is one half (the term is
            ``area / (area + half_area_ha)``).
        cue_penalty: Factor on a candidate's score when the audit confirmed a spurious cue on
            it (0-1).
        standing_penalty: Factor on a candidate's score when the map's timeline (several
            ``map.windows``) shows it mapped as a farm in every window since the first, rather
            than built during them (0-1; 1 ignores the timeline). OpenStreetMap lags on new
            construction: a site the model has seen standing for the whole period and OSM
            still lacks is more often a look-alike than a farm the mappers missed.
        report_rows: Most candidates and suspects the report lists (each).
    """

    overlap_max: float = Field(default=0.1, ge=0.0, le=1.0)
    found_share: float = Field(default=0.1, gt=0.0, le=1.0)
    surroundings_share: float = Field(default=0.5, ge=0.0, le=1.0)
    half_area_ha: float = Field(default=2.0, gt=0.0)
    cue_penalty: float = Field(default=0.25, ge=0.0, le=1.0)
    standing_penalty: float = Field(default=0.25, ge=0.0, le=1.0)
    report_rows: int = Field(default=20, ge=1)
