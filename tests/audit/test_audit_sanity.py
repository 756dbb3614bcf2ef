"""Sanity checks with a stand-in conv model: similarity helpers, cascades, shuffled labels;
which patches the checks run on and what they are given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.cues import CueMask
from pipeline.audit.explainers import CheckSetup, captum_explain
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.audit.sanity import (
    Case,
    abs_map,
    cascade_layers,
    check_cases,
    check_inputs,
    check_patches,
    data_randomization,
    model_randomization,
    randomization_cascade,
    run_sanity,
    shuffle_labels,
    spearman_abs,
    ssim_abs,
    train_arrays,
    train_shuffled,
)
from pipeline.config.audit import AuditConfig
from pipeline.geo.raster import Grid


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 1, 1),
    ).eval()


def _case(seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 24, 24, generator=gen)
    # the whole patch: a small target would make every map share its zero-gradient support
    return Case(f"p{seed}", x, Target("patch", "", torch.ones(24, 24, dtype=torch.bool)))


def test_similarity_helpers_on_known_maps() -> None:
    a = np.arange(64, dtype=float).reshape(8, 8)
    assert spearman_abs(a, a) == pytest.approx(1.0)
    assert spearman_abs(a, -a) == pytest.approx(1.0)  # absolute values
    assert spearman_abs(a, 63 - a) == pytest.approx(-1.0)
    assert spearman_abs(a, np.zeros_like(a)) == 0.0  # a constant map keeps nothing
    assert ssim_abs(a, a) == pytest.approx(1.0)
    assert ssim_abs(a, 63 - a) < 0
    assert abs_map(np.stack([a, -2 * a])).max() == 126


def test_cascade_goes_from_head_down_and_leaves_the_model_alone() -> None:
    model = _model()
    before = [p.clone() for p in model.parameters()]
    names = [name for name, _ in cascade_layers(model)]
    assert names == ["4", "2", "0"]
    steps = list(randomization_cascade(model, 3, seed=0))
    assert [label for label, _ in steps] == ["4", "2", "0"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_saliency_passes_model_randomization() -> None:
    explain = captum_explain  # the local captum saliency (the integration point's fallback)
    out = model_randomization(
        explain, _model(), ["saliency"], [_case(0), _case(1)], steps=3, seed=0, max_similarity=0.5
    )
    rho = out["methods"]["saliency"]["spearman"]
    assert len(rho) == 3 and rho[-1] < 0.5
    assert out["methods"]["saliency"]["pass"] is True


def test_model_independent_explainer_fails() -> None:
    def edge_detector(method, model, x, target, seed):  # ignores the model entirely
        return np.abs(x[0].numpy())

    out = model_randomization(
        edge_detector, _model(), ["edges"], [_case(0)], steps=2, seed=0, max_similarity=0.5
    )
    assert out["methods"]["edges"]["spearman"] == [pytest.approx(1.0)] * 2
    assert out["methods"]["edges"]["pass"] is False


def test_shuffled_labels_training() -> None:
    masks = torch.stack([torch.full((24, 24), float(i)) for i in range(4)])
    shuffled = shuffle_labels(masks, seed=0)
    assert all(not torch.equal(shuffled[i], masks[i]) for i in range(4))  # a derangement
    model = _model()
    before = [p.clone() for p in model.parameters()]
    images = torch.randn(4, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    trained, loss = train_shuffled(model, images, (masks > 1).float(), steps=3, seed=0)
    assert np.isfinite(loss) and not trained.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    res = data_randomization(
        captum_explain, model, trained, ["saliency"], [_case(0)], seed=0, max_similarity=0.5
    )
    assert set(res["saliency"]) == {"spearman", "ssim", "pass"}
    assert -1.0 <= res["saliency"]["spearman"] <= 1.0


def _mask(rows: slice, cols: slice, size: int = 8) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[rows, cols] = True
    return m


def test_check_patches_put_confirmed_farms_first_then_the_largest() -> None:
    small, large = _mask(slice(0, 2), slice(0, 2)), _mask(slice(0, 4), slice(0, 4))
    huge = _mask(slice(0, 6), slice(0, 6))
    farm_masks = {
        ("pa", "label_farms", "w1"): small,
        ("pb", "label_farms", "w2"): large,
        ("pc", "label_farms", "w3"): huge,
        ("pa", "label_farms", "w4"): huge,  # pa again: its largest farm is w4
    }
    order = check_patches(farm_masks, confirmed=set())
    assert [pid for pid, _ in order] == ["pc", "pa", "pb"]
    assert order[1][1] is huge  # pa comes with w4's mask
    confirmed = check_patches(farm_masks, confirmed={"w1"})
    assert [pid for pid, _ in confirmed] == ["pa", "pc", "pb"] and confirmed[0][1] is small
    assert check_patches({}, {"w1"}) == []


def _patch(pid: str, bands: tuple[str, ...] = ("a", "b", "c", "d")) -> PatchData:
    grid = Grid(CRS.from_epsg(32618), Affine(10.0, 0, 0.0, 0, -10.0, 0.0), 24, 24)
    image = np.random.default_rng(0).uniform(1, 100, (len(bands), 24, 24)).astype(np.float32)
    labels = np.zeros((24, 24), bool)
    labels[4:8, 4:8] = True
    ones = np.ones((24, 24), bool)
    cues = {"snow": CueMask("snow", ~ones, "scl")}
    return PatchData(pid, image, bands, grid, ones, labels, labels.copy(), cues)


def _access() -> ModelAccess:
    return ModelAccess(_model(), lambda a: torch.as_tensor(a / 100.0), 0.5, ("a", "b", "c", "d"))


def test_check_inputs_fall_back_to_every_patch_without_farms() -> None:
    patches = {"p0": _patch("p0"), "p1": _patch("p1")}
    flags = pd.DataFrame({"target_id": ["w1"], "verdict": ["confirmed"]})
    farm = _mask(slice(0, 3), slice(0, 3), 24)
    chosen = check_inputs({("p1", "label_farms", "w1"): farm}, flags, patches)
    assert [(p.patch_id, m is farm) for p, m in chosen] == [("p1", True)]
    every = check_inputs({}, flags.iloc[:0], patches)
    assert [(p.patch_id, m) for p, m in every] == [("p0", None), ("p1", None)]


def test_check_cases_crop_around_the_farm_and_skip_other_bands() -> None:
    farm = _mask(slice(10, 14), slice(18, 22), 24)
    sources = [
        (_patch("p0"), farm),
        (_patch("p1", ("x", "y", "z", "w")), farm),
        (_patch("p2"), None),
    ]
    cases = check_cases(sources, _access(), crop=8)
    assert [c.patch_id for c in cases] == ["p0", "p2"]  # p1 has other bands than the model
    assert cases[0].x.shape == (1, 4, 8, 8) and cases[0].target.name == "farm"
    assert int(cases[0].target.mask.sum()) == 16  # the whole farm is in the crop
    assert int(cases[1].target.mask.sum()) == 16  # no farm mask: the labelled pixels instead
    whole = check_cases(sources[:1], _access(), crop=8, whole_patch=True)
    assert bool(whole[0].target.mask.all())


def test_train_arrays_crop_on_the_labels_and_skip_other_bands() -> None:
    p, q = _patch("p0"), _patch("p1", ("x", "y", "z", "w"))
    pairs = [(p.image, p.bands, p.labels.astype(np.uint8)), (q.image, q.bands, q.labels)]
    images, masks = train_arrays(pairs, _access(), crop=8)
    assert images.shape == (1, 4, 8, 8) and masks.shape == (1, 8, 8)
    assert int(masks.sum()) == 16
    assert train_arrays(pairs[1:], _access(), crop=8) is None


def test_run_sanity_records_a_method_that_cannot_run() -> None:
    audit = AuditConfig(
        sanity_methods=("saliency", "occlusion"), cascade_steps=2, data_randomization_steps=0
    )
    setup = CheckSetup(_access(), captum_explain, audit, seed=0)
    payload = run_sanity([_case(0)], setup, train_pairs=iter(()))
    assert payload["methods"] == ["saliency"] and "occlusion" in payload["errors"]
    assert set(payload["model_randomization"]["methods"]) == {"saliency"}
    assert payload["data_randomization"] == {
        "skipped": "disabled (audit.data_randomization_steps = 0)"
    }
    assert run_sanity([], setup, iter(()))["skipped"] == "no patch usable for the checks"
