"""``lab sweep --address``: trials run on a Ray cluster started beforehand (``ray start``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 35 s: starts a Ray cluster with `ray start`
@pytest.mark.skipif(not RAY.is_file(), reason="the ray command is not installed")
def test_profile_sweep_on_a_running_cluster(tmp_path):
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    start = [
        str(RAY),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--temp-dir={temp_dir}",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a throwaway cluster on loopback
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=env)
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "scaling_lab.cli",
                "sweep",
                str(ROOT / "experiments" / "table3_scaling.yaml"),
                "--profile-only",
                "--address",
                f"127.0.0.1:{port}",
                "--storage",
                str(tmp_path / "runs"),
                "--reports",
                str(tmp_path / "reports"),
                "--no-report",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    finally:
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)  # this cluster only
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"Connected to Ray cluster at 127.0.0.1:{port}" in run.stderr
    assert "Started a local Ray instance" not in run.stderr
    # off a terminal: a line per trial and a summary, no live line and none of Ray's output
    lines = run.stdout.splitlines()
    assert sum(" finished " in line for line in lines) == 4, run.stdout
    assert any(line.startswith("table3_scaling: 4 trials (4 finished) in ") for line in lines)
    assert "== Status ==" not in run.stdout and "\r" not in run.stdout
    results = pd.read_csv(tmp_path / "reports" / "table3_scaling" / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"finished"}


def test_an_unreachable_cluster_is_a_clear_error(tmp_path, capsys):
    from scaling_lab.cli import main

    port = _free_port()  # nothing listens there
    argv = ["sweep", str(ROOT / "experiments" / "table3_scaling.yaml"), "--profile-only",
            "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot connect to the Ray cluster at '127.0.0.1:{port}'" in err[0]
