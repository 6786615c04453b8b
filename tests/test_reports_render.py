"""Published tables from hand-written run folders, against hand computations."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import pytest
from fakeruns import partition, write_run

from pflcore.reports.render import render
from pflcore.reports.runs import RecordError
from pflcore.reports.spec import SpecError, parse

T2 = 4.30265  # two-sided 95 % Student-t quantile, 2 df (printed table)
T3 = 3.18245  # 3 df


def catalog(tables: list[dict]) -> object:
    return parse(
        {
            "settings": {"runs": "runs", "out": "out", "documents": []},
            "table": tables,
        }
    )


def csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {row["method"]: row for row in csv.DictReader(io.StringIO(text))}


# per seed: (method -> correct counts of 4 clients, 10 test samples each)
SEEDS = {
    0: {"local": [9, 8, 7, 10], "fomo": [10, 8, 8, 10], "avg": [5, 4, 6, 5]},
    1: {"local": [8, 8, 8, 9], "fomo": [9, 9, 8, 9], "avg": [6, 6, 5, 4]},
    2: {"local": [7, 9, 9, 9], "fomo": [8, 9, 9, 10], "avg": [4, 5, 5, 6]},
}
SAMPLES = [10, 10, 10, 10]


@pytest.fixture
def three_seeds(tmp_path):
    for seed, methods in SEEDS.items():
        for method, correct in methods.items():
            write_run(
                tmp_path / "runs" / f"seed{seed}" / method,
                seed=seed,
                correct=correct,
                samples=SAMPLES,
                config={"num_rounds": 5, "local_epochs": 2},
            )
    return tmp_path


def methods_table(**overrides) -> dict:
    table = {
        "name": "t",
        "title": "T",
        "command": "cmd",
        "reference": "Local",
        "local": "Local",
        "budget": ["local_epochs"],
        "row": [
            {"label": "Local", "runs": "seed*/local"},
            {
                "label": "FedFomo",
                "runs": "seed*/fomo",
                "paper": {"value": 86.0, "sd": 1.0, "source": "Table 9"},
            },
            {"label": "FedAvg", "runs": "seed*/avg"},
        ],
    }
    table.update(overrides)
    return table


def seed_mean(method: str, seed: int) -> float:
    return sum(c / 10 for c in SEEDS[seed][method]) / 4


def test_three_seeds_mean_sd_and_interval_over_seeds(three_seeds):
    (table,) = catalog([methods_table()]).tables
    rendered = render(table, three_seeds / "runs")
    rows = csv_rows(rendered.csv)
    fomo = [seed_mean("fomo", s) for s in SEEDS]
    mean = sum(fomo) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in fomo) / 2)
    assert float(rows["FedFomo"]["mean_pct"]) == pytest.approx(100 * mean)
    assert float(rows["FedFomo"]["sd_pct"]) == pytest.approx(100 * sd)
    assert rows["FedFomo"]["sd_over"] == "seeds"
    # paired over seeds: per-seed differences with FedFomo's own Local
    diffs = [seed_mean("fomo", s) - seed_mean("local", s) for s in SEEDS]
    d_mean = sum(diffs) / 3
    d_sd = math.sqrt(sum((d - d_mean) ** 2 for d in diffs) / 2)
    half = T2 * d_sd / math.sqrt(3)
    assert rows["FedFomo"]["delta_over"] == "seeds"
    assert float(rows["FedFomo"]["delta_points"]) == pytest.approx(100 * d_mean)
    assert float(rows["FedFomo"]["ci_low"]) == pytest.approx(
        100 * (d_mean - half), abs=1e-3
    )
    assert float(rows["FedFomo"]["ci_high"]) == pytest.approx(
        100 * (d_mean + half), abs=1e-3
    )
    # clients below Local: seed 0 none, seed 1 none, seed 2 none (by the counts)
    below = [
        sum(f < loc for f, loc in zip(SEEDS[s]["fomo"], SEEDS[s]["local"], strict=True))
        / 4
        for s in SEEDS
    ]
    assert float(rows["FedFomo"]["below_local_share"]) == pytest.approx(sum(below) / 3)
    assert float(rows["FedAvg"]["below_local_share"]) == pytest.approx(1.0)
    assert rows["FedAvg"]["verdict"] == "below"
    # the markdown says the same, with the rules in the caption
    text = rendered.markdown
    assert "sample std (ddof = 1) over the row's seeds" in text
    assert "FedAvg vs Local: **below**" in text
    assert "86 ± 1 (Table 9)" in text
    assert "**Budget:** local_epochs = 2." in text


def test_a_seed_some_rows_lack_is_left_out_until_every_row_has_it(three_seeds):
    shutil.rmtree(three_seeds / "runs" / "seed2" / "avg")  # FedAvg lacks seed 2
    (table,) = catalog([methods_table()]).tables
    rendered = render(table, three_seeds / "runs")
    rows = csv_rows(rendered.csv)
    fomo = [seed_mean("fomo", s) for s in (0, 1)]
    assert float(rows["FedFomo"]["mean_pct"]) == pytest.approx(100 * sum(fomo) / 2)
    assert rows["FedFomo"]["seeds"] == "0;1"
    assert "Seed 2: recorded for some rows only" in rendered.markdown


def test_one_seed_interval_over_clients_and_counts(three_seeds):
    table = methods_table()
    for row in table["row"]:
        row["runs"] = row["runs"].replace("seed*", "seed0")
    (spec,) = catalog([table]).tables
    rows = csv_rows(render(spec, three_seeds / "runs").csv)
    per_client = [
        (f - loc) / 10
        for f, loc in zip(SEEDS[0]["fomo"], SEEDS[0]["local"], strict=True)
    ]  # +0.1, 0, +0.1, 0
    mean = sum(per_client) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in per_client) / 3)
    half = T3 * sd / 2
    fomo = rows["FedFomo"]
    assert fomo["delta_over"] == "clients" and fomo["delta_n"] == "4"
    assert float(fomo["ci_low"]) == pytest.approx(100 * (mean - half), abs=1e-3)
    assert (fomo["clients_higher"], fomo["clients_lower"], fomo["clients_equal"]) == (
        "2",
        "0",
        "2",
    )
    assert fomo["verdict"] == "tie"  # the interval reaches below 0
    accs = [c / 10 for c in SEEDS[0]["fomo"]]
    m = sum(accs) / 4
    assert fomo["sd_over"] == "clients"
    assert float(fomo["sd_pct"]) == pytest.approx(
        100 * math.sqrt(sum((a - m) ** 2 for a in accs) / 3)
    )


def test_pooled_statistic_and_before_column(tmp_path):
    write_run(
        tmp_path / "runs" / "a",
        seed=0,
        correct=[1, 90],
        samples=[10, 100],
        before=[0.25, 0.75],
    )
    spec = catalog(
        [
            {
                "name": "p",
                "title": "P",
                "command": "c",
                "statistic": "pooled",
                "row": [{"label": "A", "runs": "a"}],
            },
            {
                "name": "b",
                "title": "B",
                "command": "c",
                "row": [
                    {"label": "A before", "runs": "a", "column": "before_accuracy"}
                ],
            },
        ]
    )
    pooled = csv_rows(render(spec.tables[0], tmp_path / "runs").csv)["A"]
    assert float(pooled["mean_pct"]) == pytest.approx(100 * 91 / 110)
    before = csv_rows(render(spec.tables[1], tmp_path / "runs").csv)["A before"]
    assert float(before["mean_pct"]) == pytest.approx(50.0)


def test_runs_on_different_partitions_are_not_paired(tmp_path):
    write_run(tmp_path / "runs" / "a", seed=0, correct=[1, 2], samples=[4, 4])
    write_run(
        tmp_path / "runs" / "b",
        seed=0,
        correct=[3, 2],
        samples=[4, 4],
        partition_text=partition(2, variant=1),
    )
    (spec,) = catalog(
        [
            {
                "name": "x",
                "title": "X",
                "command": "c",
                "reference": "A",
                "row": [{"label": "A", "runs": "a"}, {"label": "B", "runs": "b"}],
            }
        ]
    ).tables
    with pytest.raises(RecordError, match="not on the same partition"):
        render(spec, tmp_path / "runs")


def test_unfinished_or_missing_runs_stop_the_table(tmp_path):
    write_run(
        tmp_path / "runs" / "a", seed=0, correct=[1], samples=[4], status="failed"
    )
    (spec,) = catalog(
        [
            {
                "name": "x",
                "title": "X",
                "command": "c",
                "row": [{"label": "A", "runs": "a"}],
            }
        ]
    ).tables
    with pytest.raises(RecordError, match="not completed"):
        render(spec, tmp_path / "runs")
    (spec,) = catalog(
        [
            {
                "name": "x",
                "title": "X",
                "command": "c",
                "row": [{"label": "A", "runs": "nothing/*"}],
            }
        ]
    ).tables
    with pytest.raises(RecordError, match="no run folder matches"):
        render(spec, tmp_path / "runs")


def test_clients_table_lists_summary_fields(tmp_path):
    fields = {"novel": [{"partition_id": 0, "d": 0.25}, {"partition_id": 1, "d": 0.5}]}
    write_run(
        tmp_path / "runs" / "a",
        seed=0,
        correct=[1, 3],
        samples=[4, 4],
        extra_summary=fields,
    )
    (spec,) = catalog(
        [
            {
                "name": "c",
                "title": "C",
                "kind": "clients",
                "command": "c",
                "row": [{"label": "A", "runs": "a"}],
                "client_field": [{"key": "novel", "field": "d", "label": "dist"}],
            }
        ]
    ).tables
    text = render(spec, tmp_path / "runs").markdown
    assert "| 0 | 0.250 | 25.00 |" in text
    assert "| 1 | 0.500 | 75.00 |" in text
    sd = math.sqrt(((0.25 - 0.5) ** 2 + (0.75 - 0.5) ** 2) / 1)
    assert f"| 50.00 ± {100 * sd:.2f} |" in text


def test_spec_refuses_unknown_keys_and_rows():
    with pytest.raises(SpecError, match="unknown keys"):
        catalog([{**methods_table(), "colour": "red"}])
    with pytest.raises(SpecError, match="names no row"):
        catalog([methods_table(reference="Nobody")])
    with pytest.raises(SpecError, match="is not one of"):
        catalog([methods_table(round="first")])


def tuning_table(chosen: str) -> dict:
    return {
        "name": "tune",
        "title": "Tuning",
        "command": "cmd",
        "chosen": chosen,
        "row": [
            {"label": "lam 0.1", "runs": "lam0.1", "versus": "none"},
            {"label": "lam 1", "runs": "lam1", "versus": "none"},
        ],
    }


def test_a_tuning_table_names_the_best_row_and_refuses_another(tmp_path):
    # means by hand: lam 0.1 -> (7 + 9) / 20 = 80 %, lam 1 -> (6 + 9) / 20 = 75 %
    for name, correct in (("lam0.1", [7, 9]), ("lam1", [6, 9])):
        write_run(
            tmp_path / "runs" / name,
            seed=0,
            correct=correct,
            samples=[10, 10],
            extra_summary={"tuning": "test = held-out half of validation"},
        )
    text = render(
        catalog([tuning_table("lam 0.1")]).tables[0], tmp_path / "runs"
    ).markdown
    assert "**Chosen:** `lam 0.1`" in text
    assert "each client's held-out validation accuracy" in text
    assert "test accuracy" not in text
    with pytest.raises(
        RecordError, match=r"chosen = .lam 1. \(75.00 %\) but .lam 0.1."
    ):
        render(catalog([tuning_table("lam 1")]).tables[0], tmp_path / "runs")
    with pytest.raises(SpecError, match="names no row"):
        catalog([tuning_table("lam 5")])


def test_fairness_columns_by_hand(three_seeds):
    # worst 10 % of 4 clients is the lowest one; client std by hand (ddof = 1)
    spec = catalog([methods_table(fairness=True)])
    rendered = render(spec.tables[0], three_seeds / "runs")
    row = csv_rows(rendered.csv)["FedAvg"]
    worst = [min(SEEDS[s]["avg"]) / 10 for s in range(3)]  # 0.4, 0.4, 0.4
    assert float(row["worst10_pct"]) == pytest.approx(100 * sum(worst) / 3)
    stds = []
    for s in range(3):
        acc = [c / 10 for c in SEEDS[s]["avg"]]
        m = sum(acc) / 4
        stds.append(math.sqrt(sum((a - m) ** 2 for a in acc) / 3))
    assert float(row["client_sd_pct"]) == pytest.approx(100 * sum(stds) / 3)
    assert "| worst 10 % | client std |" in rendered.markdown
    assert "40.00 ± 0.00" in rendered.markdown  # FedAvg's worst client, every seed
    plain = render(catalog([methods_table()]).tables[0], three_seeds / "runs")
    assert "worst 10 %" not in plain.markdown


def test_a_second_reference_and_pooled_accuracy_by_hand(three_seeds):
    spec = catalog([methods_table(also_versus="FedFomo", pooled=True)])
    rendered = render(spec.tables[0], three_seeds / "runs")
    rows = csv_rows(rendered.csv)
    # pooled: total correct over the 40 test samples of each seed
    pooled = [sum(SEEDS[s]["avg"]) / 40 for s in range(3)]  # 0.5, 0.525, 0.5
    assert float(rows["FedAvg"]["pooled_pct"]) == pytest.approx(100 * sum(pooled) / 3)
    # FedAvg - FedFomo per seed: -0.4, -0.35, -0.4; t(0.975, 2) = 4.302653
    diffs = [-0.4, -0.35, -0.4]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    row = rows["FedAvg"]
    assert row["versus_2"] == "FedFomo" and row["verdict_2"] == "below"
    assert float(row["delta_points_2"]) == pytest.approx(100 * mean)
    assert float(row["ci_low_2"]) == pytest.approx(100 * (mean - half), abs=1e-4)
    assert float(row["ci_high_2"]) == pytest.approx(100 * (mean + half), abs=1e-4)
    assert rows["FedFomo"]["versus_2"] == ""  # not against itself
    assert rows["Local"]["versus_2"] == "FedFomo"  # the first reference gets the second
    assert "| second paired Δ (points), 95 % CI |" in rendered.markdown
    assert "FedAvg vs FedFomo: **below**" in rendered.markdown
    assert "**Pooled:**" in rendered.markdown


def test_a_second_reference_must_name_a_row():
    with pytest.raises(SpecError, match="'Nobody' names no row"):
        catalog([methods_table(also_versus="Nobody")])


def test_a_diverged_row_shows_its_round_and_is_never_chosen(tmp_path):
    # lam 0.1 at 80 % by hand; lam 1 stopped with a non-finite loss after round 3
    write_run(tmp_path / "runs" / "lam0.1", seed=0, correct=[7, 9], samples=[10, 10])
    write_run(
        tmp_path / "runs" / "lam1",
        seed=0,
        correct=[10, 10],  # what it scored before diverging does not count
        samples=[10, 10],
        status="failed",
        round_=3,
        extra_summary={"error": "NonFiniteLossError: loss became nan; lower lr"},
    )
    rendered = render(catalog([tuning_table("lam 0.1")]).tables[0], tmp_path / "runs")
    lines = rendered.markdown.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert next(x for x in lines if x.startswith("| lam 0.1 |")).startswith(
        "| lam 0.1 | 80.00 ± "
    )
    diverged = next(x for x in lines if x.startswith("| lam 1 |"))
    assert diverged.split(" | ")[1] == "diverged in round 4"
    assert diverged.count("|") == header.count("|")
    assert "**Diverged:**" in rendered.markdown
    assert "**Chosen:** `lam 0.1`" in rendered.markdown
    rows = csv_rows(rendered.csv)
    assert rows["lam 1"]["diverged"] == "0:4" and rows["lam 1"]["mean_pct"] == ""
    assert rows["lam 0.1"]["diverged"] == ""
    with pytest.raises(RecordError, match="'lam 1' diverged"):
        render(catalog([tuning_table("lam 1")]).tables[0], tmp_path / "runs")
    # any other failure still stops the table
    summary = tmp_path / "runs" / "lam1" / "summary.json"
    summary.write_text(summary.read_text().replace("NonFiniteLossError", "OSError"))
    with pytest.raises(RecordError, match="not completed"):
        render(catalog([tuning_table("lam 0.1")]).tables[0], tmp_path / "runs")


def test_a_row_cannot_be_set_against_a_diverged_row(three_seeds):
    for seed in SEEDS:
        summary = three_seeds / "runs" / f"seed{seed}" / "local" / "summary.json"
        data = json.loads(summary.read_text())
        data.update(status="failed", error="NonFiniteLossError: loss became inf")
        summary.write_text(json.dumps(data))
    (spec,) = catalog([methods_table()]).tables
    with pytest.raises(RecordError, match="set against 'Local', which diverged"):
        render(spec, three_seeds / "runs")


def test_a_row_with_a_diverged_seed_is_computed_over_its_other_seeds(three_seeds):
    summary = three_seeds / "runs" / "seed2" / "fomo" / "summary.json"
    data = json.loads(summary.read_text())
    data.update(status="failed", error="NonFiniteLossError: loss became nan")
    data.update(rounds_completed=35)
    summary.write_text(json.dumps(data))
    (spec,) = catalog([methods_table()]).tables
    rendered = render(spec, three_seeds / "runs")
    row = csv_rows(rendered.csv)["FedFomo"]
    assert row["seeds"] == "0;1" and row["diverged"] == "2:36"
    by_hand = (seed_mean("fomo", 0) + seed_mean("fomo", 1)) / 2
    assert float(row["mean_pct"]) == pytest.approx(100 * by_hand)
    # paired with Local on the 2 common seeds: fewer than 3, so over clients
    assert row["delta_over"] == "clients" and row["delta_n"] == "8"
    diffs = [
        (f - lo) / 10
        for s in (0, 1)
        for f, lo in zip(SEEDS[s]["fomo"], SEEDS[s]["local"], strict=True)
    ]
    assert float(row["delta_points"]) == pytest.approx(100 * sum(diffs) / 8)
    # conditional on not diverging: no word for it, whatever the interval says
    assert row["verdict"] == "no verdict (seed 2 diverged)"
    assert csv_rows(rendered.csv)["FedAvg"]["verdict"] in ("above", "below", "tie")
    line = next(x for x in rendered.markdown.splitlines() if x.startswith("| FedFomo"))
    assert "(seed 2 diverged in round 36)" in line
    assert "**Diverged:**" in rendered.markdown
    local = csv_rows(rendered.csv)["Local"]
    assert local["seeds"] == "0;1;2" and local["diverged"] == ""
