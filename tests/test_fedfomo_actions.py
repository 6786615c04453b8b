"""FedFomo's evaluate phase dispatches on Flower message actions, one job each.

``evaluate`` tests the stored baseline and leaves it; ``evaluate.fomo_update``
moves the baseline from the candidates and tests nothing;
``evaluate.fomo_update_and_test`` moves it, then tests the moved baseline.
The checks are against what each job must leave: the state, the reply's keys,
and a test of the stored model made here with the runtime's own evaluator.
"""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from hydra import compose, initialize_config_dir

from fedfomo.client import get_runtime
from fedfomo.main import PACKAGE as FEDFOMO
from fedfomo.messages import evaluate_type
from fedfomo.models import build_model
from pflcore.config import to_plain
from tests.mainrun import REPO
from tests.messages import context

SMALL = ["num_clients=5", "partition.pool_fraction=0.5", "local_epochs=1"]
BASELINE = "fomo-baseline"  # the wire name of the client's stored baseline


@pytest.fixture(scope="module")
def app_and_runtime():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("fedfomo", overrides=["experiment=fedfomo/quick", *SMALL])
    config = FEDFOMO.resolve(to_plain(cfg))
    return FEDFOMO.client_app_for(config), get_runtime(config)


def shifted(seed: int, scale: float) -> ArrayRecord:
    g = torch.Generator().manual_seed(seed)
    initial = build_model(0, 10, 1, 32).state_dict()  # digits: 10 classes, 1 channel
    return ArrayRecord(
        {
            k: v + scale * torch.randn(v.shape, generator=g)
            if v.is_floating_point()
            else v
            for k, v in initial.items()
        }
    )


def evaluate_message(kind: str, candidates: dict[str, ArrayRecord]) -> Message:
    content = RecordDict({**candidates, "config": ConfigRecord({"server-round": 3})})
    return Message(content, dst_node_id=1, message_type=kind)


def stored(ctx) -> dict[str, torch.Tensor]:
    return ctx.state.array_records[BASELINE].to_torch_state_dict()


def test_the_three_message_types():
    assert evaluate_type(update=False, test=True) == "evaluate"
    assert evaluate_type(update=True, test=False) == "evaluate.fomo_update"
    assert evaluate_type(update=True, test=True) == "evaluate.fomo_update_and_test"
    with pytest.raises(ValueError, match="must update, test or both"):
        evaluate_type(update=False, test=False)


def test_each_action_does_its_job_and_nothing_else(app_and_runtime):
    app, runtime = app_and_runtime
    pid = 1
    start = shifted(0, 0.02)
    # candidates: near copies of the start, so some weigh positive or none do;
    # either way the update's result is stored as the baseline
    candidates = {f"candidate-{j}": shifted(j + 1, 0.05) for j in (0, 2, 3)}

    ctx = context(pid)
    ctx.state[BASELINE] = start
    tested = app(evaluate_message("evaluate", {}), ctx)
    metrics = dict(tested.content.metric_records["metrics"])
    assert "correct" in metrics and "fomo-weights" not in metrics
    for key, value in stored(ctx).items():  # the baseline is left as it was
        assert torch.equal(value, start.to_torch_state_dict()[key])
    runtime.load(start)
    expected = runtime.evaluate_test(pid, 500)
    assert metrics["correct"] == expected.correct

    ctx = context(pid)
    ctx.state[BASELINE] = start
    updated = app(evaluate_message("evaluate.fomo_update", candidates), ctx)
    metrics = dict(updated.content.metric_records["metrics"])
    assert "correct" not in metrics and metrics["partition-id"] == pid
    assert sorted(metrics["fomo-candidates"]) == [0, 2, 3]
    moved = stored(ctx)

    ctx = context(pid)
    ctx.state[BASELINE] = start
    both = app(evaluate_message("evaluate.fomo_update_and_test", candidates), ctx)
    metrics = dict(both.content.metric_records["metrics"])
    for key, value in stored(ctx).items():  # the same update as the update alone
        assert torch.equal(value, moved[key])
    runtime.load(ArrayRecord(moved))
    assert metrics["correct"] == runtime.evaluate_test(pid, 500).correct
