"""DDP on CPU with 2 gloo processes: gradients and weights stay in sync, and the gathered
contrastive loss equals the single-process loss on the whole batch (a brute-force oracle)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _init(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)


def _oracle_worker(rank: int, init_file: str, out_dir: str) -> None:
    from lpr_core.models.losses import contrastive_loss

    _init(rank, init_file)
    try:
        g = torch.Generator().manual_seed(0)
        clips = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        images = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        labels = torch.tensor([0, 1, 2, 3, 4, 0, 5, 6])  # rows 0 and 5 share a product, across ranks
        shard = slice(rank * 4, rank * 4 + 4)
        results = {}
        for with_grad in (True, False):
            c = clips[shard].clone().requires_grad_(True)
            i = images[shard].clone().requires_grad_(True)
            loss, _ = contrastive_loss(c, i, torch.tensor(10.0), labels[shard], gather_with_grad=with_grad)
            loss.backward()
            results[with_grad] = (loss.detach(), c.grad.clone(), i.grad.clone())
        torch.save(results, os.path.join(out_dir, f"oracle{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradient_match_single_process(tmp_path):
    from lpr_core.models.losses import contrastive_loss

    mp.start_processes(_oracle_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    g = torch.Generator().manual_seed(0)
    clips = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1).requires_grad_(True)
    images = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 5, 6])
    full, _ = contrastive_loss(clips, images, torch.tensor(10.0), labels)
    full.backward()
    ranks = [torch.load(tmp_path / f"oracle{r}.pt") for r in range(WORLD)]
    # the mean of the ranks' losses is the loss of the whole batch
    for with_grad in (True, False):
        mean_loss = sum(r[with_grad][0] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, full.detach())
    # exact gradient through the gather: each rank's shard gets W x d(full)/d(shard)
    # (DDP then averages over ranks)
    for rank, r in enumerate(ranks):
        shard = slice(rank * 4, rank * 4 + 4)
        torch.testing.assert_close(r[True][1], WORLD * clips.grad[shard])
        torch.testing.assert_close(r[True][2], WORLD * images.grad[shard])
        # local-shard-only gradient misses the other ranks' terms
        assert not torch.allclose(r[False][1], WORLD * clips.grad[shard])


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _train_worker(rank: int, init_file: str, out_dir: str, world_root: str) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import tiny_encoder_params

    from lpr_core.data.datasets import ManifestImages
    from lpr_core.training.checkpoint import seed_everything
    from lpr_core.training.distributed import DistEnv
    from lpr_core.training.engine import fit
    from lpr_core.training.tasks import build_encoder_task

    _init(rank, init_file)
    try:
        import pyarrow.parquet as pq

        clips = pq.read_table(os.path.join(world_root, "clips.parquet"))
        frames = ManifestImages.from_download(world_root, "train", "frames")
        images = ManifestImages.from_download(world_root, "train", "images")
        params = tiny_encoder_params(max_steps=3, checkpoint_every=3, batch_size=2, grad_accum_steps=2)
        seed_everything(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
        task = build_encoder_task(params, clips, frames, images)
        init = _flat(task.model.parameters()).clone()
        grads = []
        fit(task, params.train, os.path.join(out_dir, "run"), env=DistEnv(rank, WORLD, 0),
            on_step_end=lambda step: grads.append(
                torch.cat([p.grad.flatten() for p in task.model.parameters() if p.grad is not None]).clone()
            ))
        final = _flat(task.model.parameters())
        torch.save({"init": init, "final": final, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_ranks_stay_in_sync(tmp_path, tiny_world):
    import pyarrow.parquet as pq

    root = tiny_world["root"]
    pq.write_table(tiny_world["clips"], root / "clips.parquet")
    mp.start_processes(
        _train_worker, args=(str(tmp_path / "init"), str(tmp_path), str(root)), nprocs=WORLD, start_method="spawn"
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    assert not torch.equal(r0["init"], r1["init"])  # the ranks started apart
    assert torch.equal(r0["final"], r1["final"])  # and ended identical
    assert not torch.equal(r0["final"], r0["init"])
    assert len(r0["grads"]) == len(r1["grads"]) == 3
    for g0, g1 in zip(r0["grads"], r1["grads"]):
        torch.testing.assert_close(g0, g1)  # all-reduced gradients on every step
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "run" / "plots" / "train_loss.tsv").exists()
