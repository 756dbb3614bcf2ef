"""A map's objects scored against the planted truth (the noisy-label experiment's measure)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
from support.triage import model_rows

from pipeline.triage.truth import score_map


def test_map_score_counts_objects_on_farms_and_the_unmapped_farms_found(triage_world) -> None:
    truth = triage_world.truth
    objects = gpd.GeoDataFrame(pd.DataFrame(model_rows(truth)), geometry="geometry", crs=4326)
    score = score_map(objects, truth.farms)
    farms, lookalikes = len(truth.farms), len(truth.distractors)
    assert score.objects == farms + lookalikes
    assert score.on_farm == farms and score.found == farms and score.recall == 1.0
    assert score.precision == farms / (farms + lookalikes)
    unmapped = truth.farms[truth.farms["label_error"] == "unmapped"]
    assert score.unmapped == score.unmapped_found == len(unmapped) == 2
    assert sorted(score.unmapped_found_ids) == sorted(unmapped["farm_id"])
    # without the unmapped farms' objects, neither is found and precision is over the rest
    kept = objects[
        [g.intersection(unmapped.to_crs(4326).union_all()).area == 0 for g in objects.geometry]
    ]
    less = score_map(kept, truth.farms)
    assert less.unmapped_found == 0 and less.found == farms - 2
    assert less.objects == len(kept) and less.on_farm == farms - 2
