from pflcore.records.progress import ProgressPrinter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_and_last_round_print_and_the_rest_is_throttled():
    clock, lines = FakeClock(), []
    progress = ProgressPrinter(100, min_interval_s=10, clock=clock, write=lines.append)
    printed = []
    for r in range(1, 101):
        clock.now = r * 1.0  # one second per round
        if progress.update(r, {"time_s": r * 1.0, "train_loss": 0.5}) is not None:
            printed.append(r)
    # Round 1, then every 10 s of clock (rounds 11, 21, ...), and the last round.
    assert printed == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]
    assert len(lines) == len(printed)


def test_line_shows_latest_evaluated_accuracy_elapsed_and_time_left():
    clock, lines = FakeClock(), []
    progress = ProgressPrinter(40, min_interval_s=0, clock=clock, write=lines.append)
    clock.now = 30.0
    progress.update(10, {"time_s": 30.0, "train_loss": 1.25, "test_acc_mean": 0.5})
    clock.now = 60.0
    progress.update(20, {"time_s": 60.0, "train_loss": 1.0})
    # 60 s for 20 rounds: 20 rounds left take 60 s more.
    assert lines[1] == (
        "[round 20/40] acc 0.5000 (round 10)  loss 1.0000  elapsed 1:00  left ~1:00"
    )
    assert "acc 0.5000 (round 10)" in lines[0]


def test_hours_are_shown_for_long_runs_and_missing_accuracy_is_marked():
    lines: list[str] = []
    clock = FakeClock()
    progress = ProgressPrinter(5000, min_interval_s=0, clock=clock, write=lines.append)
    clock.now = 900.0
    progress.update(1000, {"time_s": 900.0, "train_loss": float("nan")})
    assert "not evaluated yet" in lines[0] and "loss --" in lines[0]
    assert "left ~1:00:00" in lines[0]  # 0.9 s/round x 4000 rounds


def test_a_later_stage_estimates_from_its_own_rounds_and_shows_prefix_and_note():
    clock, lines = FakeClock(), []
    clock.now = 500.0  # an earlier stage took 500 s
    progress = ProgressPrinter(10, min_interval_s=0, clock=clock, write=lines.append)
    clock.now = 510.0
    progress.update(
        1, {"time_s": 510.0, "train_loss": 0.5}, prefix="reptile", note="(before 0.1)"
    )
    assert lines[0].startswith("[reptile round  1/10]")
    assert "(not evaluated yet) (before 0.1)" in lines[0]
    assert "elapsed 8:30" in lines[0] and "left ~?" in lines[0]
    clock.now = 530.0
    progress.update(3, {"time_s": 530.0, "train_loss": 0.5})
    assert "left ~1:10" in lines[1]  # rounds 2-3 took 10 s each; 7 rounds left


def test_the_start_up_in_round_one_is_not_extrapolated():
    clock, lines = FakeClock(), []
    progress = ProgressPrinter(10, min_interval_s=0, clock=clock, write=lines.append)
    clock.now = 60.0  # Ray and the clients start during round 1
    progress.update(1, {"time_s": 60.0, "train_loss": 0.5})
    clock.now = 64.0  # then 1 s per round
    progress.update(5, {"time_s": 64.0, "train_loss": 0.5})
    assert lines[0].endswith("elapsed 1:00  left ~?")
    assert lines[1].endswith("elapsed 1:04  left ~0:05")  # 5 rounds x 1 s, not x 12.8 s
