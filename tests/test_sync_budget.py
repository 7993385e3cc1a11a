"""The sync budget of a training step: a FixMatch step with VLM-PP (the oracle) makes at most 2
host-device syncs outside the logging steps, counted by tests/sync_count.py (docs/performance.md)."""

import pytest
from helpers import TINY_RUN
from sync_count import count_syncs

from semiearth.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")
BUDGET = 2
LOG_EVERY = 3
RUN = [
    *TINY_RUN,
    "train.method=fixmatch",
    "train.iters=6",
    f"train.log_every={LOG_EVERY}",
    "train.eval_every=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "purify.method=oracle",
    "purify.every=1",
    "purify.max_regions=4",
    "purify.records_every=100",  # records at the first purification only
]


def step_syncs(tmp_path, monkeypatch, overrides):
    """Run a tiny training run; returns (counter, [Counter of sites per step])."""
    from semiearth.train import train
    from semiearth.train import trainer as T

    make_loader = T.make_loader
    marks = []

    class Prefetched:
        """The loader's batches, read before counting; the labelled one marks where each step starts."""

        def __init__(self, batches, marking):
            self.batches, self.marking = batches, marking

        def __iter__(self):
            for batch in self.batches:
                if self.marking:
                    marks.append(syncs.snapshot())
                yield batch
            if self.marking:
                marks.append(syncs.snapshot())

    def prefetched_loader(dataset, cfg, labelled, batch_size, s):
        with syncs.paused():
            return Prefetched(list(make_loader(dataset, cfg, labelled, batch_size, s)), labelled)

    monkeypatch.setattr(T, "make_loader", prefetched_loader)
    cfg = load_config(None, [*RUN, *overrides, f"out_dir={tmp_path}"])
    with count_syncs() as syncs:
        result = train(cfg)
    assert not result["interrupted"]
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    assert len(steps) == cfg.train.iters
    return syncs, steps


def report(steps) -> str:
    lines = []
    for i, sites in enumerate(steps, start=1):
        lines.append(f"step {i}: {sum(sites.values())} syncs")
        lines += [f"  {n:3d}  {site}" for site, n in sites.most_common()]
    return "\n".join(lines)


def test_fixmatch_vlmpp_step_makes_at_most_two_syncs(tmp_path, monkeypatch):
    _, steps = step_syncs(tmp_path, monkeypatch, [])
    print(report(steps))
    # step 1 writes purify.jsonl (records) and meets every shape for the first time; steps 3 and 6 log
    plain = [i for i in range(2, len(steps) + 1) if i % LOG_EVERY]
    assert plain == [2, 4, 5]
    for i in plain:
        n = sum(steps[i - 1].values())
        assert n <= BUDGET, (
            f"step {i} made {n} syncs (budget {BUDGET}):\n{report([steps[i - 1]])}\n\nall steps:\n{report(steps)}"
        )


def test_a_bad_value_still_stops_the_run_at_the_next_logging_step(tmp_path, monkeypatch):
    """The value checks are deferred to the logging steps, not dropped: a classifier returning NaN
    stops the run with the error that the immediate check gives, before any row is logged."""
    from semiearth.purify import OracleClassifier
    from semiearth.train import train

    steps = []
    call = OracleClassifier.__call__

    def nan_oracle(self, crops, regions):
        steps.append(1)
        return call(self, crops, regions) * float("nan")

    monkeypatch.setattr(OracleClassifier, "__call__", nan_oracle)
    cfg = load_config(None, [*RUN, f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"^classifier OracleClassifier returned NaN or inf probabilities$"):
        train(cfg)
    assert len(steps) == LOG_EVERY  # raised at the first logging step
    assert not (tmp_path / "metrics.jsonl").read_text().strip()


def test_stage_timer_adds_merges_and_reads_on_the_cpu():
    from semiearth.timing import StageTimer

    timer = StageTimer("cpu", ("a",))
    with timer("b"):
        pass
    timer.add("data", 0.5)
    other = StageTimer("cpu")
    other.add("b", 1.0)
    timer.merge(other)
    assert set(timer.total) == {"a", "b", "data"} and timer.total["a"] == 0.0
    assert timer.total["data"] == 0.5 and 1.0 <= timer.total["b"] < 1.5 and timer.pending == 0
