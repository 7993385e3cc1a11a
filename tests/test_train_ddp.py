"""2 processes, gloo on CPU: both ranks hold the same weights after a few DDP steps, for every method."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from helpers import TINY_RUN

TINY = TINY_RUN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, method: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from semiearth.config import load_config
    from semiearth.train import distributed as D
    from semiearth.train import train

    overrides = [*TINY, f"out_dir={out}", "train.iters=4", "train.eval_every=2", f"train.method={method}"]
    overrides += ["purify.method=oracle", "purify.every=2", "purify.max_regions=2", "train.grad_clip=1.0"]
    result = train(load_config(None, overrides), keep_state=True)
    nets = result["state"].method.networks()
    weights = {name: {k: v for k, v in m.state_dict().items() if v.is_floating_point()} for name, m in nets.items()}
    torch.save({"weights": weights, "val": result["val"]["mIoU"]}, os.path.join(out, f"rank{rank}.pt"))
    D.cleanup()


@pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")
@pytest.mark.parametrize("method", ["supervised", "fixmatch", "mean_teacher", "unimatch_v2", "cps"])
def test_two_process_gloo_ranks_agree(tmp_path, method):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), method), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for net, weights in r0["weights"].items():
        for k, v in weights.items():
            if "running" not in k:  # BN statistics are per rank (SyncBatchNorm on CUDA only)
                assert torch.equal(v, r1["weights"][net][k]), f"{net}.{k}"
    assert r0["val"] == r1["val"]  # metrics are all-reduced
    latest = torch.load(tmp_path / "latest.pth", weights_only=True)  # only rank 0 writes
    assert latest["iteration"] == 4
