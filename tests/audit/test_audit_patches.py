"""The audit's inputs read from a miniature run: index, polygons, patches, masks, cue rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.audit import FARM, SIZE, SNOW, build_run, region_mask

from pipeline.audit.patches import (
    CUE_COLUMNS,
    FARM_TARGETS,
    cue_rows,
    load_patch,
    read_attribution,
    read_attribution_index,
    read_farm_polygons,
    read_train_pairs,
    target_mask,
)
from pipeline.bands import BANDS
from pipeline.errors import MissingArtifactError


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory):
    return build_run(tmp_path_factory.mktemp("patches"))


def test_farm_targets_name_run_paths(mini) -> None:
    _, paths = mini
    assert FARM_TARGETS["label_farms"].path(paths) == paths.farms
    assert FARM_TARGETS["false_positives"].path(paths) == paths.false_positives
    assert FARM_TARGETS["missed_farms"].path(paths) == paths.missed_farms
    assert FARM_TARGETS["predicted_farms"].id_column == "pred_id"


def test_index_keeps_ok_rows_with_text_ids(mini, tmp_path) -> None:
    cfg, paths = mini
    index = read_attribution_index(paths, cfg.run.name)
    assert len(index) == 8 and set(index["target_id"]) == {"w1", "w2", ""}
    cfg2, paths2 = build_run(tmp_path)
    raw = pd.read_csv(paths2.attribution_index)
    raw.loc[:2, "status"] = "skipped"
    raw.to_csv(paths2.attribution_index, index=False)
    assert len(read_attribution_index(paths2, cfg2.run.name)) == 5
    values, aggregate = read_attribution(paths.resolve(index.loc[0, "path"]))
    assert values.shape == (len(BANDS), SIZE, SIZE) and aggregate.shape == (SIZE, SIZE)


def test_polygons_of_the_object_targets_present(mini, caplog) -> None:
    _, paths = mini
    polygons = read_farm_polygons(paths, {"label_farms", "predicted_mask", "missed_farms"})
    assert set(polygons) == {("label_farms", "w1"), ("label_farms", "w2")}
    assert "polygons of missed_farms targets not found" in caplog.text


def test_load_patch_masks_and_cue_rows(mini) -> None:
    cfg, paths = mini
    p0, p1 = (load_patch(paths, cfg, pid, {}) for pid in ("p0", "p1"))
    assert p0.cues["snow"].source == "scl" and p1.cues["snow"].source == "ndsi"
    assert np.array_equal(p0.labels, region_mask(FARM)) and p0.predicted.dtype == bool
    rows = pd.DataFrame(cue_rows(p1))
    assert tuple(rows.columns) == CUE_COLUMNS
    snow = rows.set_index("cue").loc["snow"]
    assert snow["status"] == "computed" and snow["pixels"] == int(region_mask(SNOW).sum())
    with pytest.raises(MissingArtifactError, match="make fetch"):
        load_patch(paths, cfg, "p9", {})


def test_target_masks(mini) -> None:
    cfg, paths = mini
    p = load_patch(paths, cfg, "p0", {})
    polygons = read_farm_polygons(paths, {"label_farms"})
    farm = target_mask("label_farms", "w1", p, polygons)
    assert farm is not None and np.array_equal(farm, region_mask(FARM))
    assert target_mask("label_farms", "w9", p, polygons) is None  # no polygon
    assert target_mask("predicted_mask", "", p, polygons) is p.predicted
    assert target_mask("patch", "", p, polygons).all()


def test_train_pairs_are_read_lazily(mini, tmp_path) -> None:
    _, paths = mini
    pairs = list(read_train_pairs(paths, limit=8))
    assert [int(m.sum()) for _, _, m in pairs] == [int(region_mask(FARM).sum())] * 2
    assert all(bands == BANDS for _, bands, _ in pairs)
    assert len(list(read_train_pairs(paths, limit=1))) == 1
    _, elsewhere = build_run(tmp_path)
    elsewhere.tiles_index.unlink()
    assert list(read_train_pairs(elsewhere, limit=8)) == []  # no tiles index: nothing to train on
