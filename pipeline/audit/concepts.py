"""Concept tests (TCAV): has the model as a whole learned "snow" (cloud, water) as evidence of a
farm?

Per-farm maps and counterfactuals say what one prediction leans on. Testing with Concept
Activation Vectors (Kim et al. 2018; ``captum.concept.TCAV``) asks the model-level question: at a
layer of the U-Net, the direction separating the channel means of cue crops (snow blobs cut from
the run's own patches) from those of plain background crops is the concept; the TCAV score is
the share of farm crops whose farm output rises along it. A concept is significant when its
scores against ``audit.concept_random`` random concepts (other plain background crops) differ
from those of a random concept against the same randoms (two-sided t-test, Bonferroni over the
layers). A concept with fewer than ``audit.concept_min_examples`` crops is ``not_testable``:
never "no reliance".

Crops are ``audit.concept_crop`` pixels square, stored DN ``(C, s, s)``, normalized by the
model's own normalization; the farm output of a crop is the mean logit over its farm pixels.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn
from torch.utils.data import DataLoader

from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.config.audit import AuditConfig
from pipeline.errors import AuditError
from pipeline.tables import Columns

ConceptVerdict = Literal["uses_concept", "counter_concept", "no_evidence", "not_testable"]

#: Columns of ``audit/concepts.csv``: one row per concept and layer.
CONCEPT_COLUMNS = Columns(
    ("concept", "the cue tested as a concept: snow, cloud or water"),
    ("layer", "the U-Net module whose activations hold the concept (dotted path)"),
    ("verdict", "uses_concept, counter_concept, no_evidence or not_testable (model-level)"),
    ("examples", "cue crops the concept was built from"),
    ("tcav_score", "mean share of farm crops whose farm output rises along the concept (0-1)"),
    ("null_score", "the same for a random concept against the same randoms (0-1)"),
    ("p_value", "two-sided t-test of the concept's scores against the random concept's"),
    (
        "significant",
        "p_value below audit.concept_alpha / number of layers, with cav_accuracy at least 0.7",
    ),
    ("cav_accuracy", "mean held-out accuracy of the concept-vs-random linear classifiers"),
    ("reason", "why the concept could not be tested"),
)


# ------------------------------------------------------------------------------ crops
def window_at(shape: tuple[int, int], centre: tuple[int, int], side: int) -> tuple[int, int] | None:
    """Upper-left corner of the ``side`` window centred near ``centre``, moved inside
    ``shape``; ``None`` when the patch is smaller than the window."""
    height, width = shape
    if height < side or width < side:
        return None
    r0 = min(max(centre[0] - side // 2, 0), height - side)
    c0 = min(max(centre[1] - side // 2, 0), width - side)
    return r0, c0


def _cut(array: np.ndarray, corner: tuple[int, int], side: int) -> np.ndarray:
    r0, c0 = corner
    return array[..., r0 : r0 + side, c0 : c0 + side]


def blob_crops(
    patches: Sequence[PatchData], masks: Sequence[np.ndarray], side: int, min_share: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(crop, mask crop)`` centred on each connected blob of each patch's ``mask``, where the
    window has data everywhere and the blob covers at least ``min_share`` of it."""
    out = []
    for p, mask in zip(patches, masks, strict=True):
        labels, _ = ndimage.label(mask & p.valid)
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            centre = ((sl[0].start + sl[0].stop) // 2, (sl[1].start + sl[1].stop) // 2)
            corner = window_at(p.valid.shape, centre, side)
            if corner is None or not _cut(p.valid, corner, side).all():
                continue
            piece = _cut(labels == i, corner, side)
            if piece.mean() >= min_share:
                out.append((_cut(p.image, corner, side), _cut(mask, corner, side)))
    return out


def cue_pixels(p: PatchData, cue: str) -> np.ndarray:
    """``(H, W)`` bool pixels of ``cue`` on ``p`` off the farms (none when not computable)."""
    found = p.cues.get(cue)
    if found is None or found.mask is None:
        return np.zeros(p.valid.shape, bool)
    return found.mask & ~(p.labels | p.predicted)


def plain_crops(
    patches: Sequence[PatchData], side: int, count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Up to ``count`` crops of plain background: data everywhere, no cue and no farm
    (labelled or predicted), at random places of random patches."""
    out: list[np.ndarray] = []
    if not patches:
        return out
    for _ in range(count * 20):
        p = patches[int(rng.integers(len(patches)))]
        height, width = p.valid.shape
        if height < side or width < side:
            continue
        corner = (int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1)))
        busy = p.labels | p.predicted | ~p.valid
        for cue in p.cues.values():
            busy = busy | (cue.mask if cue.mask is not None else False)
        if not _cut(busy, corner, side).any():
            out.append(_cut(p.image, corner, side))
            if len(out) == count:
                break
    return out


# ------------------------------------------------------------------------------ model side
class FarmOutput(nn.Module):
    """The segmentation model reduced to one farm score per crop: the mean logit over the
    crop's farm mask (over the whole crop when no mask is given, as for concept examples)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(x)[:, 0]
        if mask is None:
            return logits.mean(dim=(1, 2))
        weights = mask.to(logits.dtype)
        return (logits * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp(min=1.0)


def auto_layers(net: nn.Module) -> tuple[str, ...]:
    """Two layers of a U-Net: its first (deepest) and second-to-last decoder blocks, else its
    last two Conv2d modules (dotted paths in ``net``)."""
    names = [n for n, _ in net.named_modules()]
    blocks = sorted(
        (n for n in names if n.startswith("decoder.blocks.") and n.count(".") == 2),
        key=lambda n: int(n.rsplit(".", 1)[1]),
    )
    if len(blocks) >= 2:
        return blocks[0], blocks[-2]
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if len(convs) < 2:
        raise AuditError(
            "audit.concept_layers = auto needs a model with decoder blocks or two Conv2d layers; "
            "name the layers (dotted module paths) in audit.concept_layers"
        )
    return convs[-2], convs[-1]


def resolve_layers(net: nn.Module, wanted: Sequence[str]) -> tuple[str, ...]:
    """The layers to test as paths in :class:`FarmOutput` (``net.`` prefixed).

    Raises:
        AuditError: a named layer is not a module of the model.
    """
    names = dict(net.named_modules())
    layers = auto_layers(net) if tuple(wanted) == ("auto",) else tuple(wanted)
    for layer in layers:
        if layer not in names:
            raise AuditError(
                f"audit.concept_layers: the model has no module {layer!r}; use dotted paths "
                f"such as {', '.join(list(names)[1:6])} (or auto)"
            )
    return tuple(f"net.{layer}" for layer in layers)


class LinearCAV:
    """An L2-regularized logistic regression fitted with L-BFGS on spatially pooled activations:
    the concept activation vector (captum's ``Classifier`` interface, without scikit-learn).

    A U-Net's layer activations are maps: snow at the centre of a concept crop and snow beside
    the farm of a tested crop sit at different places, and a CAV on the flattened map would
    compare places, not things. The classifier therefore fits one weight per channel on the
    channel means, and the CAV it returns spreads each channel's weight evenly over the map
    (the directional derivative is then that of a uniform rise of the channel). ``shapes`` maps
    a flattened size to its layer's ``(C, H, W)``; a size it does not know is fitted flat. A
    seeded third of the examples is held out for the accuracy.
    """

    def __init__(
        self, seed: int = 0, shapes: Mapping[int, tuple[int, int, int]] | None = None
    ) -> None:
        self.seed, self.l2 = seed, 1e-3
        self.shapes = dict(shapes or {})
        self._w = torch.zeros(0)
        self._spread = 1
        self._classes: list[int] = []

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        shape = self.shapes.get(x.shape[1])
        if shape is None:
            self._spread = 1
            return x
        channels, height, width = shape
        self._spread = height * width
        return x.view(len(x), channels, height * width).mean(dim=2)

    def train_and_eval(self, dataloader: DataLoader, **_: Any) -> dict[str, torch.Tensor]:
        xs, ys = zip(*list(dataloader), strict=True)
        x = self._pooled(torch.cat(xs).flatten(1).double().cpu())
        y = torch.cat(ys).cpu()
        self._classes = sorted({int(v) for v in y.tolist()})
        target = (y == self._classes[-1]).double()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        test, train = perm[: len(x) // 3], perm[len(x) // 3 :]
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-9)
        feats = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        w = torch.zeros(feats.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = feats[train] @ w
            loss = nn.functional.binary_cross_entropy_with_logits(z, target[train])
            loss = loss + self.l2 * (w[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        direction = (w.detach()[:-1] / std).float()  # back in activation units
        self._w = direction.repeat_interleave(self._spread) / self._spread
        pred = (feats[test] @ w.detach()) > 0
        acc = (pred == target[test].bool()).double().mean() if len(test) else torch.tensor(1.0)
        return {"accs": acc}

    def weights(self) -> torch.Tensor:
        return torch.stack([-self._w, self._w])

    def classes(self) -> list[int]:
        return self._classes


def layer_shapes(model: nn.Module, layers: Sequence[str], x: torch.Tensor) -> dict[int, Any]:
    """Flattened size -> ``(C, H, W)`` of each layer's output on ``x`` (sizes two layers share
    are left out: their CAVs are fitted flat)."""
    found: dict[str, tuple[int, int, int]] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, tuple(out.shape[1:]))
        )
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    sizes = [int(np.prod(shape)) for shape in found.values()]
    return {
        size: shape
        for size, shape in zip(sizes, found.values(), strict=True)
        if sizes.count(size) == 1 and len(shape) == 3
    }


def _concept(ident: int, name: str, crops: torch.Tensor) -> Any:
    from captum.concept import Concept

    loader: DataLoader[torch.Tensor] = DataLoader(
        crops,  # type: ignore[arg-type]  # a tensor is a map-style dataset of its rows
        batch_size=64,
        shuffle=False,
    )
    return Concept(ident, name, loader)


@dataclass(frozen=True)
class ConceptData:
    """What one model-level test runs on (all normalized ``(N, C, s, s)`` tensors).

    Attributes:
        concepts: Concept name -> its example crops.
        randoms: The random concepts' crops (plain background), at least two.
        inputs: Farm crops whose farm output is differentiated.
        masks: ``(N, s, s)`` farm masks of ``inputs``.
    """

    concepts: Mapping[str, torch.Tensor]
    randoms: Sequence[torch.Tensor]
    inputs: torch.Tensor
    masks: torch.Tensor


def tcav_scores(
    model: FarmOutput, layers: Sequence[str], data: ConceptData, seed: int
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per concept and layer: its TCAV sign scores against each random concept (``scores``),
    a held-out random concept's against the same randoms (``null``), and the classifiers'
    held-out accuracies (``accuracy``)."""
    from captum.concept import TCAV

    randoms = [_concept(1000 + i, f"random{i}", r) for i, r in enumerate(data.randoms[1:])]
    probe = _concept(999, "random_probe", data.randoms[0])
    named = {n: _concept(i, n, c) for i, (n, c) in enumerate(data.concepts.items())}
    sets = [[c, r] for c in [*named.values(), probe] for r in randoms]
    with tempfile.TemporaryDirectory() as tmp, torch.enable_grad():
        shapes = layer_shapes(model, layers, data.inputs)
        tcav = TCAV(model, list(layers), classifier=LinearCAV(seed, shapes), save_path=tmp)
        out = tcav.interpret(data.inputs, sets, additional_forward_args=(data.masks,))
        accs = {
            key: {layer: float(cav.stats["accs"]) for layer, cav in per_layer.items()}
            for key, per_layer in tcav.cavs.items()
        }
    result: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, concept in [*named.items(), ("random_probe", probe)]:
        per_layer = result.setdefault(name, {})
        for layer in layers:
            keys = [f"{concept.id}-{r.id}" for r in randoms]
            per_layer[layer] = {
                "scores": [float(out[k][layer]["sign_count"][0]) for k in keys],
                "accuracy": [accs[k][layer] for k in keys],
            }
    for name in named:
        for layer in layers:
            result[name][layer]["null"] = result["random_probe"][layer]["scores"]
    return result


#: Held-out accuracy a layer's concept-vs-random classifiers need for the concept to count as
#: one there: a random sample of plain background is not separable from another (about 0.5),
#: and its direction, however consistent, is no concept.
MIN_CAV_ACCURACY = 0.7


def significance(
    scores: Sequence[float], null: Sequence[float], alpha: float, accuracy: float = 1.0
) -> dict[str, Any]:
    """The t-test of a concept's scores against the null's: p-value and whether it is below
    ``alpha`` (already divided by the number of layers) with the concept separable from plain
    background (``accuracy`` >= :data:`MIN_CAV_ACCURACY`). Two constant, equal samples give
    p = 1; constant, different ones p = 0."""
    a, b = np.asarray(scores, float), np.asarray(null, float)
    if a.std() == 0 and b.std() == 0:
        p = 1.0 if a.mean() == b.mean() else 0.0
    else:
        with warnings.catch_warnings():  # near-constant samples: scipy warns, p is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return {
        "tcav_score": float(a.mean()),
        "null_score": float(b.mean()),
        "p_value": p,
        "significant": bool(p < alpha and accuracy >= MIN_CAV_ACCURACY),
    }


def concept_verdict(rows: Sequence[Mapping[str, Any]]) -> ConceptVerdict:
    """A concept's model-level verdict from its layer rows: ``uses_concept`` when a layer is
    significant with the farm output rising along the concept, ``counter_concept`` when only
    falling, ``no_evidence`` when no layer is significant."""
    hits = [r for r in rows if r.get("significant")]
    if not rows or any(r.get("verdict") == "not_testable" for r in rows):
        return "not_testable"
    if any(r["tcav_score"] > r["null_score"] for r in hits):
        return "uses_concept"
    return "counter_concept" if hits else "no_evidence"


def layer_rows(
    name: str, layers: Sequence[str], found: Mapping[str, Any], examples: int, alpha: float
) -> list[dict[str, Any]]:
    """``concepts.csv`` rows of one tested concept (:data:`CONCEPT_COLUMNS`)."""
    rows = []
    for layer in layers:
        res = found[layer]
        accuracy = float(np.mean(res["accuracy"]))
        row = {
            "concept": name,
            "layer": layer.removeprefix("net."),
            "examples": examples,
            **significance(res["scores"], res["null"], alpha / len(layers), accuracy),
            "cav_accuracy": accuracy,
            "reason": "",
        }
        rows.append(row)
    verdict = concept_verdict(rows)
    return [{**r, "verdict": verdict} for r in rows]


def untestable_rows(
    name: str, layers: Sequence[str], examples: int, why: str
) -> list[dict[str, Any]]:
    """The rows of a concept that cannot be tested (``not_testable`` with the reason)."""
    head = {"concept": name, "verdict": "not_testable", "examples": examples, "reason": why}
    return [{**head, "layer": layer.removeprefix("net.")} for layer in layers]


# ------------------------------------------------------------------------------ the audit
def _take(items: list[Any], count: int, rng: np.random.Generator) -> list[Any]:
    order = rng.permutation(len(items))[:count]
    return [items[int(i)] for i in order]


def _randoms(
    patches: Sequence[PatchData], audit: AuditConfig, rng: np.random.Generator
) -> list[np.ndarray] | str:
    """``audit.concept_random`` + 1 groups of plain crops (the first is the null's probe)."""
    groups = audit.concept_random + 1
    crops = plain_crops(patches, audit.concept_crop, groups * audit.concept_examples, rng)
    size = len(crops) // groups
    if size < audit.concept_min_examples:
        return (
            f"only {len(crops)} plain background crops of {audit.concept_crop} px; "
            f"{groups} x {audit.concept_min_examples} are needed (audit.concept_random, "
            "audit.concept_min_examples)"
        )
    return [np.stack(crops[i * size : (i + 1) * size]) for i in range(groups)]


def run_concepts(
    patches: Sequence[PatchData], access: ModelAccess, audit: AuditConfig, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Test every configured cue as a concept on the run's own patches.

    Returns:
        The rows of ``concepts.csv`` (:data:`CONCEPT_COLUMNS`) and ``concepts.json``
        (settings, and per concept its verdict, examples and per-layer numbers).

    Raises:
        AuditError: a layer of ``audit.concept_layers`` is not in the model.
    """
    rng = np.random.default_rng(seed)
    side = audit.concept_crop
    layers = resolve_layers(access.model, audit.concept_layers)
    farms = blob_crops(patches, [p.labels for p in patches], side, 0.02)
    farms = _take(farms, audit.concept_inputs, rng)
    randoms = _randoms(patches, audit, rng)
    cues = {
        cue: [c for c, _ in blob_crops(patches, [cue_pixels(p, cue) for p in patches], side, 0.05)]
        for cue in audit.cues
    }
    rows: list[dict[str, Any]] = []
    testable: dict[str, torch.Tensor] = {}
    for cue, crops in cues.items():
        why = _why_not(len(crops), len(farms), randoms, audit, cue)
        if why:
            rows += untestable_rows(cue, layers, len(crops), why)
        else:
            testable[cue] = _norm(access, _take(crops, audit.concept_examples, rng))
    if testable and not isinstance(randoms, str):
        data = ConceptData(
            testable,
            [_norm(access, list(r)) for r in randoms],
            _norm(access, [c for c, _ in farms]),
            torch.from_numpy(np.stack([m for _, m in farms])),
        )
        found = tcav_scores(FarmOutput(access.model).eval(), layers, data, seed)
        for name, examples in testable.items():
            rows += layer_rows(name, layers, found[name], len(examples), audit.concept_alpha)
    return rows, concept_document(rows, layers, len(farms), audit)


def _why_not(
    n_crops: int, n_inputs: int, randoms: list[np.ndarray] | str, audit: AuditConfig, cue: str
) -> str:
    if n_crops < audit.concept_min_examples:
        return (
            f"{n_crops} {cue} crops of {audit.concept_crop} px in the run's patches, fewer than "
            f"audit.concept_min_examples = {audit.concept_min_examples}: not testable"
        )
    if isinstance(randoms, str):
        return randoms
    return "" if n_inputs else "no farm crop to differentiate (no labelled farm in the patches)"


def _norm(access: ModelAccess, crops: Sequence[np.ndarray]) -> torch.Tensor:
    return access.normalize(np.stack(crops).astype(np.float32)).detach()


def concept_document(
    rows: Sequence[Mapping[str, Any]], layers: Sequence[str], inputs: int, audit: AuditConfig
) -> dict[str, Any]:
    """``concepts.json``: the settings and, per concept, its verdict and layer rows."""
    concepts: dict[str, Any] = {}
    for row in rows:
        entry = concepts.setdefault(
            str(row["concept"]),
            {
                "verdict": row["verdict"],
                "examples": row["examples"],
                "reason": row.get("reason", ""),
            },
        )
        entry.setdefault("layers", {})[str(row["layer"])] = {
            k: row.get(k)
            for k in ("tcav_score", "null_score", "p_value", "significant", "cav_accuracy")
        }
    return {
        "layers": [layer.removeprefix("net.") for layer in layers],
        "random_concepts": audit.concept_random,
        "farm_inputs": inputs,
        "crop_px": audit.concept_crop,
        "alpha": audit.concept_alpha,
        "concepts": concepts,
    }
