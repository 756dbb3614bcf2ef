"""Reproducible draws and the pieces that make several processes train like one.

The sampler, the per-sample augmentation seeds, the global-batch statistics (batch norm and
Dice over a real two-process ``gloo`` group), the frozen unused encoder stage, and the checks
that refuse a batch that does not split or a launch Lightning cannot make.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.model import make_run
from torch import nn

from pipeline.bands import BANDS
from pipeline.config import TrainConfig
from pipeline.errors import ConfigError
from pipeline.model.data import (
    EpochSampler,
    TileDataset,
    TilesDataModule,
    device_batch_size,
    epoch_draws,
    rank_share,
    read_band_stats,
    read_tiles_index,
)
from pipeline.model.fit import fit_key, fit_model, resolve_strategy, resolve_threads
from pipeline.model.module import GlobalBatchNormSync, SegLoss, SegmentationModule

TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": (32, 16, 8)}


def test_epoch_draws_depend_on_seed_and_epoch_only() -> None:
    a = epoch_draws(10, 12, seed=0, epoch=0, replacement=True)
    torch.manual_seed(123)  # the global random state plays no part
    b = epoch_draws(10, 12, seed=0, epoch=0, replacement=True)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], epoch_draws(10, 12, seed=0, epoch=1, replacement=True)[0])
    assert not torch.equal(a[1], epoch_draws(10, 12, seed=1, epoch=0, replacement=True)[1])
    perm = epoch_draws(10, 10, seed=0, epoch=0)[0]
    assert sorted(perm.tolist()) == list(range(10))
    weighted = epoch_draws(3, 50, seed=0, epoch=0, weights=[0.0, 1.0, 0.0])[0]
    assert set(weighted.tolist()) == {1}


@pytest.mark.parametrize(("n", "world", "per_rank"), [(16, 2, 4), (10, 2, 4), (12, 3, 2)])
def test_ranks_batches_together_are_the_one_process_batches(
    n: int, world: int, per_rank: int
) -> None:
    one = list(EpochSampler(7, n, seed=3, replacement=True))
    shares = [
        list(EpochSampler(7, n, seed=3, replacement=True, rank=r, world_size=world))
        for r in range(world)
    ]
    global_batch = per_rank * world
    for t in range(len(shares[0]) // per_rank):
        together = sorted(d for s in shares for d in s[t * per_rank : (t + 1) * per_rank])
        assert together == sorted(one[t * global_batch : (t + 1) * global_batch])
    assert sorted(p for r in range(world) for p in rank_share(n, r, world))[:n] == list(range(n))


def test_set_epoch_gives_the_epoch_its_own_sequence() -> None:
    sampler = EpochSampler(9, 9, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first != second


def test_a_draw_fixes_crop_and_flip_whatever_the_global_state(tmp_path: Path) -> None:
    _, paths = make_run(tmp_path, n_per_split={"train": 2, "val": 1})
    records = read_tiles_index(paths.tiles_index, paths.root)
    stats = read_band_stats(paths.band_stats)
    data = TileDataset(records, stats, augment=True, crop_size=32)
    torch.manual_seed(1)
    x1, y1 = data[(0, 777)]
    torch.manual_seed(2)
    x2, y2 = data[(0, 777)]
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (len(BANDS), 32, 32)
    others = [data[(0, s)][0] for s in range(8)]
    assert any(not torch.equal(x1, o) for o in others)


def test_batch_must_split_over_processes() -> None:
    assert device_batch_size(8, 2) == 4
    with pytest.raises(ConfigError, match=r"batch_size 6 does not split evenly over 4 .*e\.g\. 8"):
        device_batch_size(6, 4)


def test_strategy_threads_and_nodes_from_config() -> None:
    assert resolve_strategy(TrainConfig(accelerator="cpu", devices=1)) == "auto"
    assert resolve_strategy(TrainConfig(accelerator="cpu", devices=2)) == "ddp"
    assert resolve_strategy(TrainConfig(accelerator="cpu", devices=1, num_nodes=2)) == "ddp"
    assert resolve_strategy(TrainConfig(accelerator="cpu", devices="0,1")) == "ddp"
    assert resolve_threads(TrainConfig(threads=3), 2) == 3
    assert 1 <= resolve_threads(TrainConfig(), 1) <= 4
    assert resolve_threads(TrainConfig(), 10_000) == 1
    with pytest.raises(ValueError, match="num_nodes"):
        TrainConfig(num_nodes=0)


def test_initial_weights_come_from_the_seed() -> None:
    cfg = TrainConfig(**TINY)
    a, b, c = (SegmentationModule.from_config(cfg, len(BANDS), seed=s) for s in (0, 0, 1))
    torch.manual_seed(5)
    w = "net.encoder.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_unused_encoder_stage_is_frozen_and_the_rest_trains() -> None:
    cfg = TrainConfig(encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    module = SegmentationModule.from_config(cfg, len(BANDS))
    frozen = {n for n, p in module.net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("encoder.layer4.") for n in frozen)
    module.net(torch.randn(2, len(BANDS), 64, 64)).mean().backward()
    trainable = [n for n, p in module.net.named_parameters() if p.requires_grad]
    assert all(module.net.get_parameter(n).grad is not None for n in trainable)
    # the exported state dict is unchanged (model.pt files stay loadable both ways)
    assert any(k.startswith("encoder.layer4.") for k in module.net.state_dict())


def test_in_process_ddp_is_refused_and_bad_batch_named_first(tmp_path: Path) -> None:
    overrides = ["train.accelerator=cpu", "train.devices=2"]
    for batch, match in ((3, "does not split evenly over 2"), (4, "re-running this command")):
        cfg, paths = make_run(tmp_path, overrides=[*overrides, f"train.batch_size={batch}"])
        records = read_tiles_index(paths.tiles_index, paths.root)
        dm = TilesDataModule(records, read_band_stats(paths.band_stats), cfg.train, 0)
        module = SegmentationModule.from_config(cfg.train, len(BANDS))
        with pytest.raises(ConfigError, match=match):
            fit_model(
                cfg.train,
                dm,
                module,
                out_dir=paths.stage_dir("train"),
                ckpt_dir=paths.checkpoints,
                logs_dir=paths.train_logs,
                key=fit_key(cfg.train, "d", 0),
                seed=0,
            )
    assert not torch.are_deterministic_algorithms_enabled()  # the fit's flags are undone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=gen) * 2 + 1
    y = (torch.rand(4, 1, 8, 8, generator=gen) > 0.7).float()
    return x, y


def _step(x: torch.Tensor, y: torch.Tensor, global_batch: bool) -> dict[str, torch.Tensor]:
    """BatchNorm -> 1x1 conv -> BCE + Dice; returns the loss gradients and running stats."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1))
    if global_batch:
        GlobalBatchNormSync().apply(net)
    x = x.clone().requires_grad_(True)
    loss = SegLoss("bce+dice")(net(x), y, global_batch=global_batch)
    loss.backward()
    out = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    out["input"] = x.grad
    out.update({k: v for k, v in net.state_dict().items() if "running" in k})
    return out


def _rank(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x, y = _batch()
    half = slice(2 * rank, 2 * rank + 2)
    grads = _step(x[half], y[half], global_batch=True)
    for name, g in grads.items():  # DDP averages parameter gradients over the processes
        if name != "input" and "running" not in name:
            dist.all_reduce(g)
            g /= 2
    torch.save(grads, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch and Lightning: 15-30 s on 2 cores
def test_two_gloo_processes_compute_the_one_process_gradient(tmp_path: Path) -> None:
    os.environ.pop("LOCAL_RANK", None)
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    x, y = _batch()
    whole = _step(x, y, global_batch=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, expected in whole.items():
        if name == "input":  # each rank's loss counts the other's through the shared sums
            got = torch.cat([ranks[0][name], ranks[1][name]]) / 2
        else:
            got = ranks[0][name]
            torch.testing.assert_close(ranks[1][name], got)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
