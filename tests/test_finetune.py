"""The pflcore pieces the perfedavg package added: step training, fine-tuned copies,
extra evaluation columns."""

import csv

import pytest
import torch
from torch import nn

from pflcore.local.finetune import FinetuneSpec, finetune_copy_and_evaluate, train_steps
from pflcore.local.transforms import BatchTransform
from pflcore.records.results import ClientEval, RunRecorder


def data(n=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    return x, torch.arange(n) % 3


def test_train_steps_takes_exactly_the_asked_steps():
    x, y = data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    counter = {"steps": 0}
    original = optimizer.step

    def counted(*args, **kwargs):
        counter["steps"] += 1
        return original(*args, **kwargs)

    optimizer.step = counted
    stats = train_steps(
        model,
        x,
        y,
        optimizer,
        BatchTransform((0.5,), (0.25,)),
        steps=7,
        batch_size=30,
        generator=torch.Generator().manual_seed(1),
        device=torch.device("cpu"),
    )
    assert counter["steps"] == 7 and stats.num_steps == 7 and stats.num_samples == 210
    with pytest.raises(ValueError, match="batch of 31 from 30"):
        train_steps(
            model,
            x,
            y,
            optimizer,
            BatchTransform((0.5,), (0.25,)),
            steps=1,
            batch_size=31,
            generator=torch.Generator(),
            device=torch.device("cpu"),
        )


def test_finetuned_copy_leaves_the_model_alone_and_zero_amount_changes_nothing():
    x, y = data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    transform = BatchTransform((0.5,), (0.25,))
    kwargs = dict(
        eval_batch_size=8, generator=torch.Generator(), device=torch.device("cpu")
    )
    before, after = finetune_copy_and_evaluate(
        model, (x, y), (x, y), transform, FinetuneSpec("epochs", 3, 0.5, 5), **kwargs
    )
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert after.loss < before.loss  # trained (and tested) on the same data here
    same = finetune_copy_and_evaluate(
        model, (x, y), (x, y), transform, FinetuneSpec("steps", 0, 0.5, 5), **kwargs
    )
    assert same[0] == same[1]


def test_recorder_writes_extra_evaluation_columns(tmp_path):
    recorder = RunRecorder(tmp_path, {"seed": 0}, extra_evals=("before",))
    after = [
        ClientEval(partition_id=i, correct=8 + i, loss_sum=1.0, num_samples=10)
        for i in range(2)
    ]
    before = [
        ClientEval(partition_id=i, correct=2 * i, loss_sum=4.0, num_samples=10)
        for i in range(2)
    ]
    recorder.log_eval(after)
    recorder.log_extra_eval("before", before)
    row = recorder.end_round(1)
    assert row["test_acc_mean"] == pytest.approx(0.85)
    assert row["before_acc_mean"] == pytest.approx(0.1)
    assert row["before_acc_pooled"] == pytest.approx(2 / 20)
    assert row["before_loss"] == pytest.approx(0.4)
    with (tmp_path / "clients.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["before_accuracy"]) for r in rows] == [0.0, 0.2]
    with pytest.raises(ValueError, match="not declared"):
        recorder.log_extra_eval("after", before)
    # a recorder without extras keeps the original columns exactly
    plain = RunRecorder(tmp_path / "plain", {})
    header = (tmp_path / "plain" / "rounds.csv").read_text().splitlines()[0]
    assert "before" not in header and plain.round_fields[-1] == "num_eval_clients"
