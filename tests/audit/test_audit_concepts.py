"""Concept tests (TCAV) on a real tiny model trained on a planted shortcut: "farm" only where
snow lies beside it. The snow concept must come out significant, a random concept must not,
and a concept with too few examples is not testable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pipeline.audit.concepts import (
    CONCEPT_COLUMNS,
    ConceptData,
    FarmOutput,
    LinearCAV,
    blob_crops,
    plain_crops,
    resolve_layers,
    run_concepts,
    significance,
    tcav_scores,
)
from pipeline.audit.cues import CueMask
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.bands import BANDS
from pipeline.config.audit import AuditConfig
from pipeline.errors import AuditError
from pipeline.geo.raster import Grid

SIDE = 64
SOIL, DARK, SNOW = 1200.0, 300.0, 6000.0


class TinyNet(nn.Module):
    """Two convolutions and a scene-wide context term: it can learn "dark square AND snow
    somewhere in view"."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(len(BANDS), 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(24, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        context = h.mean(dim=(2, 3), keepdim=True).expand_as(h)
        return self.head(torch.cat([h, context], dim=1))


def _normalize(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor((np.asarray(a, np.float32) - 1500.0) / 1000.0)


def _patch(i: int, rng: np.random.Generator, kind: str) -> PatchData:
    """``farm``: a dark square with snow beside it (labelled); ``ghost``: the square without
    snow (not a farm); ``plain``: background only."""
    image = SOIL * rng.normal(1.0, 0.05, (len(BANDS), SIDE, SIDE)).astype(np.float32)
    farm = np.zeros((SIDE, SIDE), bool)
    snow = np.zeros((SIDE, SIDE), bool)
    if kind in ("farm", "ghost"):
        r, c = (int(v) for v in rng.integers(12, 40, 2))
        farm[r : r + 10, c : c + 10] = True
        image[:, farm] = DARK
    if kind == "farm":
        dr, dc = (int(v) for v in rng.choice([-1, 1], 2))
        r0, c0 = r + 1 + dr * 11, c + 1 + dc * 11
        snow[max(r0, 0) : r0 + 8, max(c0, 0) : c0 + 8] = True
        image[:, snow] = SNOW
    grid = Grid(CRS.from_epsg(32618), Affine(10.0, 0, i * 1000.0, 0, -10.0, 0.0), SIDE, SIDE)
    cues = {"snow": CueMask("snow", snow, "scl")}
    labels = farm if kind == "farm" else np.zeros_like(farm)
    valid = np.ones((SIDE, SIDE), bool)
    return PatchData(f"p{i}", image.astype(np.uint16), BANDS, grid, valid, labels, labels, cues)


def trained_world() -> tuple[list[PatchData], ModelAccess]:
    """The patches and a TinyNet trained on them (it learns the shortcut: asserted)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    kinds = ["farm"] * 12 + ["ghost"] * 12 + ["plain"] * 6
    patches = [_patch(i, rng, k) for i, k in enumerate(kinds)]
    x = _normalize(np.stack([p.image for p in patches]))
    y = torch.from_numpy(np.stack([p.labels for p in patches])).float()[:, None]
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    weight = torch.tensor(10.0)  # farms are 2 % of the pixels
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y, pos_weight=weight)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():  # the shortcut is learned: ghosts (no snow) are not farms
        prob = torch.sigmoid(net(x))[:, 0]
    farm_prob = float(prob[:12][y[:12, 0] > 0].mean())
    ghost = np.stack([p.image[0] == DARK for p in patches[12:24]])
    ghost_prob = float(prob[12:24][torch.from_numpy(ghost)].mean())
    assert farm_prob > 0.7 and ghost_prob < 0.3, (farm_prob, ghost_prob)
    for param in net.parameters():
        param.requires_grad_(False)
    return patches, ModelAccess(net, _normalize, 0.5, BANDS)


@pytest.fixture(scope="module")
def world() -> tuple[list[PatchData], ModelAccess]:
    return trained_world()


def _audit(**kw: object) -> AuditConfig:
    base: dict[str, object] = {
        "cues": ("snow", "water"),
        "concepts": True,
        "concept_layers": ("encoder.0", "encoder.2"),
        "concept_examples": 12,
        "concept_min_examples": 6,
        "concept_random": 10,
        "concept_inputs": 12,
    }
    return AuditConfig.model_validate({**base, **kw})


def test_planted_snow_concept_is_significant(world) -> None:
    patches, access = world
    rows, doc = run_concepts(patches, access, _audit(), seed=0)
    frame = pd.DataFrame(rows).reindex(columns=list(CONCEPT_COLUMNS))
    snow = frame[frame["concept"] == "snow"]
    assert list(snow["layer"]) == ["encoder.0", "encoder.2"]
    assert doc["concepts"]["snow"]["verdict"] == "uses_concept"
    assert snow["significant"].any()
    best = snow.loc[snow["p_value"].idxmin()]
    assert best["tcav_score"] > best["null_score"] and best["p_value"] < 0.025
    assert (snow["examples"] == 12).all() and (snow["cav_accuracy"] > 0.8).all()
    # water: no water pixel in these patches -> not testable, with why; never "no evidence"
    water = doc["concepts"]["water"]
    assert water["verdict"] == "not_testable" and "concept_min_examples" in water["reason"]
    assert doc["layers"] == ["encoder.0", "encoder.2"] and doc["random_concepts"] == 10
    json.dumps(doc)  # the document is JSON as written


def test_a_random_concept_is_not_significant(world) -> None:
    patches, access = world
    rng = np.random.default_rng(5)
    plain = plain_crops(patches, 32, 12 * 12, rng)
    groups = [_normalize(np.stack(plain[i * 12 : (i + 1) * 12])) for i in range(12)]
    farms = blob_crops(patches, [p.labels for p in patches], 32, 0.02)[:12]
    data = ConceptData(
        {"random_concept": groups[0]},
        groups[1:],
        _normalize(np.stack([c for c, _ in farms])),
        torch.from_numpy(np.stack([m for _, m in farms])),
    )
    layers = resolve_layers(access.model, ("encoder.0", "encoder.2"))
    found = tcav_scores(FarmOutput(access.model).eval(), layers, data, seed=0)
    for layer in layers:
        res = found["random_concept"][layer]
        accuracy = float(np.mean(res["accuracy"]))
        assert accuracy < 0.7  # plain background is no concept: not separable from plain
        verdict = significance(res["scores"], res["null"], 0.05 / len(layers), accuracy)
        assert not verdict["significant"]


def test_too_few_examples_is_not_testable_not_no_reliance(world) -> None:
    patches, access = world
    rows, doc = run_concepts(patches[:3], access, _audit(cues=("snow",)), seed=0)
    assert doc["concepts"]["snow"]["verdict"] == "not_testable"
    assert all(r["verdict"] == "not_testable" and r["reason"] for r in rows)


def test_bad_layer_names_the_fix(world) -> None:
    _, access = world
    with pytest.raises(AuditError, match=r"audit\.concept_layers"):
        resolve_layers(access.model, ("encoder.9",))


def test_linear_cav_separates_two_clouds_of_points() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 5, generator=gen) + torch.tensor([5.0, 0, 0, 0, 0])
    b = torch.randn(30, 5, generator=gen)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([a, b]), torch.tensor([7] * 30 + [2] * 30)),
        batch_size=16,
    )
    cav = LinearCAV(seed=0)
    stats = cav.train_and_eval(loader)
    assert float(stats["accs"]) > 0.9 and cav.classes() == [2, 7]
    w = cav.weights()
    assert w.shape == (2, 5) and float(w[1, 0]) > 0 and torch.equal(w[0], -w[1])
