"""``benchmarks/gpu_check.sh``: it refuses a machine without CUDA instead of measuring the CPU,
and (slow) its smoke mode runs every step to the end, writing what each step promises."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "out"), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_refuses_and_writes_nothing(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 2
    assert "sees no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smoke_mode_runs_every_step_and_writes_its_results(tmp_path):
    done = run_script(tmp_path, SMOKE="1")
    out = tmp_path / "out"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "gpu_check.log").read_text()
    for step in ("environment", "gpu_tests", "latency_predictor", "paper_fps", "sweep"):
        assert f"== {step}: ok" in log
    assert "0 failed step(s)" in log
    summary = json.loads((out / "latency_predictor" / "summary.json").read_text())
    assert summary["figures"]["set"]["n"] == 5  # --quick: yolov7-tiny and 4 designs
    fps = [json.loads(line) for line in (out / "fps_paper.jsonl").read_text().splitlines()]
    assert [r["model"] for r in fps] == ["yolov7-tiny-deploy"] and fps[0]["latency_ms"] > 0
    with open(out / "sweep" / "elan_search_gpu" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert not list(out.rglob("*.pt"))  # checkpoints stay out of the report folder
