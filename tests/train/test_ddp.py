"""Two gloo processes (DistributedDataParallel, DistributedSampler) train two steps in lock-step."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from avcc_stream.train.config import TrainConfig
from tests.train.conftest import small_config_dict


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from avcc_stream.train.trainer import Trainer, shutdown_distributed
    from avcc_stream.train.distributed import init_distributed

    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(TrainConfig.model_validate(cfg_dict), Path(out), ctx, progress=False)
        result = trainer.run()
        params = {name: p.detach() for name, p in trainer.model.named_parameters()}
        torch.save({"step": result.global_step, "params": params,
                    "val_batches": len(trainer.val_loaders["regular"])}, Path(out) / f"rank{rank}.pt")
    finally:
        shutdown_distributed(ctx)


def test_two_process_gloo_run(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    out.mkdir()
    # 8 samples over 2 processes with batch 2 each: 2 steps.
    cfg = small_config_dict(tiny_dataset, batch_size=2)
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    for name, tensor in ranks[0]["params"].items():
        # DDP averages gradients, so both replicas hold the same weights after every step.
        # (BatchNorm running statistics are local until DDP broadcasts rank 0's at the next
        # forward; rank 0 writes the checkpoints.)
        assert torch.allclose(tensor, ranks[1]["params"][name], atol=1e-6), name
    assert (out / "best.safetensors").exists() and (out / "metrics.csv").exists()
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
