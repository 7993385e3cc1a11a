"""2 processes, gloo on CPU: both ranks hold the same weights after a few DDP steps."""

import os
import socket

import torch
import torch.multiprocessing as mp
from helpers import TINY_RUN

TINY = TINY_RUN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from semiearth.config import load_config
    from semiearth.train import distributed as D
    from semiearth.train import train

    cfg = load_config(None, [*TINY, f"out_dir={out}", "train.iters=4", "train.eval_every=2"])
    result = train(cfg, keep_state=True)
    s = result["state"]
    torch.save(
        {"model": s.bare_student.state_dict(), "ema": dict(s.teacher.named_parameters()), "val": result["val"]["mIoU"]},
        os.path.join(out, f"rank{rank}.pt"),
    )
    D.cleanup()


def test_two_process_gloo_ranks_agree(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    params = [k for k in r0["model"] if "running" not in k and "num_batches" not in k]
    for k in params:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    for k in r0["ema"]:
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    assert r0["val"] == r1["val"]  # metrics are all-reduced
    latest = torch.load(tmp_path / "latest.pth", weights_only=True)  # only rank 0 writes
    assert latest["iteration"] == 4
