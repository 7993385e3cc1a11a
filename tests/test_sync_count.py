"""count_syncs (tests/sync_count.py) counts what would make the host wait for a GPU."""

import torch
from sync_count import count_syncs


def counted(fn) -> int:
    x = torch.arange(6.0)
    with count_syncs(cpu_is_device=True) as syncs:
        fn(x)
    return syncs.total


def test_each_host_read_counts_once():
    assert counted(lambda x: x.sum().item()) == 1
    assert counted(lambda x: bool(x.any())) == 1
    assert counted(lambda x: int(x[0])) == 1
    assert counted(lambda x: float(x.max())) == 1
    assert counted(lambda x: x[x > 2]) == 1
    assert counted(lambda x: x.nonzero()) == 1
    assert counted(lambda x: x.tolist()) == 1
    assert counted(lambda x: x.numpy()) == 1
    assert counted(lambda x: x.cpu()) == 1
    assert counted(lambda x: x.to("cpu")) == 1
    assert counted(lambda x: torch.unique(x)) == 1
    assert counted(lambda x: torch.bincount(x.long())) == 1
    assert counted(lambda x: torch.equal(x, x)) == 1
    assert counted(lambda x: x.masked_select(x > 1)) == 1


def test_device_side_work_counts_nothing():
    def arithmetic(x):
        y = (x * 2 + 1).softmax(0)
        z = torch.where(x > 2, y, 0).sum() / x.numel()
        x.index_put_((torch.tensor([1, 2]),), torch.tensor([0.0, 0.0]))
        torch.sort(x, stable=True)
        x.to(torch.float64)  # a dtype conversion
        x.to("cpu", non_blocking=True)  # asynchronous
        return z

    assert counted(arithmetic) == 0


def test_sites_name_the_line_and_the_op():
    x = torch.ones(3)
    with count_syncs(cpu_is_device=True) as syncs:
        x.sum().item()
        with syncs.paused():
            x.tolist()
    ((site, n),) = syncs.by_site.items()
    assert n == 1 and site.startswith("tests/test_sync_count.py:") and site.endswith("aten._local_scalar_dense")


def test_optimiser_step_counters_are_host_only():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    with count_syncs(cpu_is_device=True) as syncs:
        opt.step()
    assert syncs.total == 0, syncs.report()
