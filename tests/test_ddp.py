"""DistributedDataParallel training on CPU with 2 gloo processes.

The known pitfall: the gradient penalty differentiates the critic twice
(autograd.grad(..., create_graph=True), then backward through that gradient), and DDP
reduces weight gradients from hooks on the backward pass. These tests check that a DDP
step with the batch split over 2 processes equals one single-process step on the whole
batch, and that `torchrun --nproc_per_node=2 wwgan.py train` runs end to end.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import wwgan

ROOT = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2
BATCH = 8
LOSSES = ("wgan-gp", "wwgan")


def _config(loss: str) -> wwgan.TrainConfig:
    return wwgan.TrainConfig(loss=loss, image_size=16, width=16, batch_size=BATCH, lam=10.0)


def _fixed_batch(config: wwgan.TrainConfig):
    """The whole batch (real, fake, eps), the same in every process."""
    rng = torch.Generator().manual_seed(123)
    shape = (config.batch_size, config.channels, config.image_size, config.image_size)
    real = torch.rand(shape, generator=rng) * 2 - 1
    fake = torch.rand(shape, generator=rng) * 2 - 1
    eps = torch.rand(config.batch_size, 1, 1, 1, generator=rng)
    return real, fake, eps


def _one_update(config, critic_for_loss, plain_critic, real, fake, eps):
    """One critic update (Algorithm 1, lines 7-9) on explicit tensors, through
    `critic_for_loss` (DDP-wrapped or not): the weight gradients and the weights after
    the Adam step."""
    optimizer = torch.optim.Adam(
        plain_critic.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
    )
    loss, _ = wwgan.critic_objective(config, critic_for_loss, real, fake, eps=eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.detach().clone() for p in plain_critic.parameters()]
    optimizer.step()
    weights = [p.detach().clone() for p in plain_critic.parameters()]
    return grads, weights


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        results = {}
        for loss in LOSSES:
            config = _config(loss)
            torch.manual_seed(0)
            critic = wwgan.Critic(config.image_size, config.channels, config.width)
            real, fake, eps = _fixed_batch(config)
            share = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
            results[loss] = _one_update(
                config, DDP(critic), critic, real[share], fake[share], eps[share]
            )
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_with_half_batches_equal_one_process_with_the_whole_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "pg_init"), str(tmp_path)), nprocs=WORLD_SIZE)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    for loss in LOSSES:
        config = _config(loss)
        torch.manual_seed(0)
        critic = wwgan.Critic(config.image_size, config.channels, config.width)
        ref_grads, ref_weights = _one_update(config, critic, critic, *_fixed_batch(config))
        # The penalty's double backward moves the gradient by O(its size): a DDP that
        # dropped or doubled that part would fail by far more than the tolerance.
        torch.manual_seed(0)
        critic = wwgan.Critic(config.image_size, config.channels, config.width)
        no_penalty = dataclasses.replace(config, lam=0.0)
        plain_grads, _ = _one_update(no_penalty, critic, critic, *_fixed_batch(config))
        scale = max(g.abs().max() for g in ref_grads)
        assert max((a - b).abs().max() for a, b in zip(ref_grads, plain_grads)) > 1e-2 * scale
        for rank in ranks:
            grads, weights = rank[loss]
            for g, ref in zip(grads, ref_grads):
                torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6 * scale)
            for w, ref in zip(weights, ref_weights):
                torch.testing.assert_close(w, ref, rtol=0, atol=1e-6)
    # both ranks hold the same weights after the step (DDP kept them in sync)
    for a, b in zip(ranks[0]["wwgan"][1], ranks[1]["wwgan"][1]):
        assert torch.equal(a, b)


def test_torchrun_two_gloo_processes_train_and_only_rank0_writes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        str(ROOT / "wwgan.py"),
        "train",
        "--dataset",
        "shapes",
        "--image-size",
        "16",
        "--width",
        "16",
        "--batch-size",
        "8",
        "--n-critic",
        "2",
        "--iterations",
        "4",
        "--log-every",
        "1",
        "--sample-every",
        "4",
        "--snapshot-every",
        "2",
        "--max-images",
        "64",
        "--device",
        "cpu",
        "--loss",
        "wwgan",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # one row per iteration: rank 1 wrote nothing (no duplicate rows)
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("critic_loss", "penalty", "wasserstein", "grad_norm", "generator_loss"):
            assert torch.isfinite(torch.tensor(row[key])), (key, row)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["iteration"] == 4
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "snapshot_0000002.pt",
        "snapshot_0000004.pt",
    ]
    # the DDP checkpoint loads into the plain models
    config, generator, critic = wwgan.load_run(out)
    assert config.batch_size == 8
    assert torch.isfinite(generator(torch.randn(2, config.latent_dim))).all()


def test_batch_that_does_not_split_over_processes_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(
        wwgan, "init_distributed", lambda device: (wwgan.DistributedContext(0, 3), device)
    )
    with pytest.raises(wwgan.WWGANError, match="multiple of 3"):
        wwgan.train(
            wwgan.TrainConfig(
                out=str(tmp_path), batch_size=8, width=16, image_size=16, iterations=1, device="cpu"
            )
        )
