"""What ``lab sweep`` prints: a line per trial, a live status line on a terminal only."""

from __future__ import annotations

import io

from scaling_lab.report.stats import summarize
from scaling_lab.sweep.progress import SweepProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _row(key: str, status: str = "finished", **values) -> dict:
    return {"key": key, "kind": "variant", "status": status, "wall_s": 42.0, **values}


def test_off_a_terminal_only_trial_lines_and_a_summary():
    out = io.StringIO()
    progress = SweepProgress("exp", 3, metric="AP50", stream=out)
    progress.started("00-base")
    progress.ended(_row("00-base", label="base", AP50=0.31, AP=0.12, params_m=2.13))
    progress.ended(_row("01-x", "failed", label="x", error="DataError: boom\n  more"))
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "base  AP50 0.310  AP 0.120  params 2.13M  finished  42s"
    assert lines[1] == "x  failed: DataError: boom more  42s"
    assert lines[2].startswith("exp: 2 trials (1 failed, 1 finished) in ")
    assert lines[2].endswith("; best AP50 0.310 (base)") and len(lines) == 3


def test_the_live_line_counts_and_estimates():
    out = _Terminal()
    progress = SweepProgress("exp", 4, metric="AP", stream=out)
    progress.resume([_row("00-a", label="a", AP=0.2)])  # a resumed sweep's finished trial
    progress.started("01-b")
    progress.started("02-c")
    status = progress.status_line()
    assert status.startswith("exp: 1/4 done, 2 running, best AP 0.200 (a), ")
    assert status.endswith("ETA ?")  # nothing finished in this session yet
    progress.ended(_row("01-b", label="b", AP=0.3))
    status = progress.status_line()
    assert "2/4 done, 1 running, best AP 0.300 (b)" in status and "ETA " in status
    assert "ETA ?" not in status
    progress.close()
    assert "\r" in out.getvalue()  # drawn in place (tqdm)


def test_repeated_rows_show_the_best_mean_with_its_interval():
    progress = SweepProgress("exp", 4, metric="AP", summarize=summarize, stream=io.StringIO())
    for key, label, seed, ap in [("a-seed0", "a", 0, 0.30), ("a-seed1", "a", 1, 0.32),
                                 ("b-seed0", "b", 0, 0.28), ("b-seed1", "b", 1, 0.29)]:  # fmt: skip
        progress.ended(_row(key, label=label, seed=seed, AP=ap))
    half = summarize([0.30, 0.32]).ci95
    assert progress.best() == f"AP 0.310 ± {half:.3f} (95% CI, 2 seeds, a)"
    line = progress.trial_line(_row("a-seed1", label="a", seed=1, AP=0.32))
    assert line.startswith("a (seed 1)  AP 0.320")


def test_search_trials_show_their_proposal_number_and_stop_epoch():
    progress = SweepProgress("s", 2, metric="AP50", stream=io.StringIO())
    row = {"key": "s-0123456789", "kind": "search", "order": 7, "status": "stopped",
           "epochs_done": 2, "AP50": 0.05, "params": 1_500_000, "wall_s": 3.25}  # fmt: skip
    assert progress.trial_line(row) == "#007 s-0123456789  AP50 0.050  stopped at epoch 2  3.2 s"
    params = SweepProgress("s", 2, metric="params", mode="min", stream=io.StringIO())
    assert "params 1.50M" in params.trial_line({**row, "params_m": 1.5})
    assert params.trial_line({**row, "params_m": 1.5}).count("params") == 1
