"""A Ray cluster of two nodes on loopback and a seeded schedule of faults against a small
training sweep (issue 29): trial kills at random steps, the worker node lost mid-sweep, the
driver killed and the sweep resumed. Shared by ``tests/sweep/test_chaos.py`` and
``benchmarks/chaos_sweep.py``.

Results are judged against the same sweep run undisturbed on this machine: a key without a
finished row is a result lost; a finished row whose AP, history, per-step losses or final
weights differ in any bit is a result changed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
FAULT_KINDS = ("sigkill", "raise", "oom", "loader")

CHAOS_SWEEP = """\
description: four tiny trainings of three epochs (chaos tests)
base: yolov7-tiny
metrics: [params, AP]
variants:
  - label: base
  - label: SiLU
    overrides: {act: silu}
  - label: narrow
    scale: {width: 0.5, mode: width}
  - label: planned RepConv
    repconv: planned
train:
  data: synth:images=24,size=64
  img_size: 64
  epochs: EPOCHS
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  hyp: {warmup_epochs: 0}
  eval_every: 1
resources: {cpu: 1}
max_concurrent: 4
max_failures: 3
"""
KEYS = ("00-base", "01-silu", "02-narrow", "03-planned-repconv")
BATCHES = 5  # per epoch: 19 train images of the synth set, batch 4
COMPARED = ("params", "AP", "AP50", "AP75", "history", "epochs_done", "status")
LOSSES = ["box", "obj", "cls", "total"]
# a dead node is noticed in ~3 s, not Ray's default ~30 s
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(proc.name))
    return tree


def node_pids(temp_dir: str) -> list[int]:
    """The processes of the Ray node started with ``temp_dir`` (a folder made for it), and
    their descendants: the trial workers retitle themselves, so the tree finds them."""
    roots = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            roots.append(int(proc.name))
    tree, seen = _children(), set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(tree.get(pid, []))
    seen.discard(os.getpid())
    return sorted(seen)


@dataclass
class LoopbackCluster:
    """A head and worker nodes started with ``ray start`` on this machine, each with a temp
    dir of its own; ``kill_node`` SIGKILLs one node's processes by pid (nothing else)."""

    head_cpus: int = 2
    port: int = field(default_factory=free_port)
    temp_dirs: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, "RAY_AUTH_MODE": "disabled", **FAST_HEALTH}

    def _start(self, args: list[str]) -> str:
        temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
        self.temp_dirs.append(temp_dir)
        command = [str(RAY), "start", *args, "--disable-usage-stats", f"--temp-dir={temp_dir}"]
        subprocess.run(command, check=True, capture_output=True, timeout=120, env=self.env())
        return temp_dir

    def start(self, worker_cpus: int = 2) -> str:
        """Head, then one worker node; returns the worker's temp dir (its handle)."""
        head = [f"--port={self.port}", f"--num-cpus={self.head_cpus}"]
        self._start(["--head", *head, "--include-dashboard=false"])
        worker = self._start([f"--address={self.address}", f"--num-cpus={worker_cpus}"])
        self.wait_nodes(2)
        return worker

    def wait_nodes(self, count: int, timeout_s: float = 60) -> None:
        script = (
            "import ray,sys;ray.init(address=sys.argv[1],logging_level=40,log_to_driver=False);"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            run = subprocess.run(
                [sys.executable, "-c", script, self.address],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env(),
            )
            if run.stdout.strip() == str(count):
                return
            time.sleep(1)
        raise TimeoutError(f"the cluster at {self.address} has not {count} nodes")

    def kill_node(self, temp_dir: str) -> int:
        pids = node_pids(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def shutdown(self) -> None:
        for temp_dir in reversed(self.temp_dirs):
            self.kill_node(temp_dir)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class ChaosResult:
    faults: list[str]
    retried: int
    lost: list[str]
    changed: list[str]
    epochs_once: bool
    reference_s: float
    chaos_s: float
    attempts: dict[str, int]

    def summary(self) -> str:
        return (
            f"faults injected {len(self.faults)}, results lost {len(self.lost)}, "
            f"results changed {len(self.changed)}"
        )


def trial_faults(seed: int, count: int, epochs: int) -> list[str]:
    """``count`` trial faults on distinct trials, at seeded epochs, batches and kinds."""
    rng = random.Random(seed)
    keys = rng.sample(KEYS, count)
    return [
        f"{key}:{rng.randrange(epochs)}:{rng.choice(FAULT_KINDS)}:{rng.randrange(BATCHES)}"
        for key in keys
    ]


def _lab(args: list[str], cwd: Path, env: dict[str, str], log: str) -> subprocess.Popen:
    """``lab ARGS`` in the background, its output in ``cwd/LOG.out`` and ``.err`` (a pipe
    nobody reads would fill and stall it)."""
    command = [sys.executable, "-m", "scaling_lab.cli", *args]
    with open(cwd / f"{log}.out", "w") as out, open(cwd / f"{log}.err", "w") as err:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
    proc.log = cwd / f"{log}.err"  # type: ignore[attr-defined]
    return proc


def _tail(proc: subprocess.Popen) -> str:
    return Path(proc.log).read_text()[-3000:]  # type: ignore[attr-defined]


def _sweep_args(exp: Path, storage: Path, reports: Path) -> list[str]:
    return [
        "sweep",
        str(exp),
        "--storage",
        str(storage),
        "--reports",
        str(reports),
        "--no-report",
        "--quiet",
    ]


def _finish(proc: subprocess.Popen, what: str, timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"{what}: still running after {timeout_s:.0f} s\n{_tail(proc)}"
        ) from None
    if proc.returncode != 0:
        raise AssertionError(f"{what}: exit {proc.returncode}\n{_tail(proc)}")


def _rows(store_root: Path) -> list[dict[str, Any]]:
    from scaling_lab.sweep.store import TrialStore

    return TrialStore(store_root).rows()


def _wait_for(proc: subprocess.Popen, store_root: Path, test: Any, what: str) -> None:
    deadline = time.time() + 600
    while time.time() < deadline:
        if test(_rows(store_root)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {_tail(proc)}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within 600 s")


def _weights(run_dir: Path) -> dict[str, Any]:
    import torch

    ckpt = torch.load(run_dir / "weights" / "last.pt", weights_only=False)
    return {"model": ckpt["model"], "ema": ckpt["ema"]["module"]}


def _same_training(ours: Path, theirs: Path) -> bool:
    """Per-step losses and final weights equal to the bit."""
    import pandas as pd
    import torch

    a, b = pd.read_csv(ours / "steps.csv"), pd.read_csv(theirs / "steps.csv")
    if not a[LOSSES].equals(b[LOSSES]):
        return False
    wa, wb = _weights(ours), _weights(theirs)
    return all(
        wa[part].keys() == wb[part].keys()
        and all(torch.equal(t, wb[part][name]) for name, t in wa[part].items())
        for part in ("model", "ema")
    )


def _epochs_once(run_dir: Path, epochs: int) -> bool:
    import pandas as pd

    steps, per_epoch = pd.read_csv(run_dir / "steps.csv"), pd.read_csv(run_dir / "results.csv")
    return list(per_epoch["epoch"]) == list(range(epochs)) and list(steps["step"]) == list(
        range(epochs * BATCHES)
    )


def run_chaos(workdir: Path, seed: int = 0, epochs: int = 3, trial_kills: int = 2) -> ChaosResult:
    """The sweep undisturbed (embedded Ray), then on a two-node loopback cluster with
    ``trial_kills`` seeded trial faults, the worker node killed once a trial has trained an
    epoch, and the driver killed once a trial has finished, then ``lab sweep --resume``."""
    from scaling_lab.sweep.faults import FAULTS_ENV
    from scaling_lab.sweep.store import TrialStore

    exp = workdir / "chaos.yaml"
    exp.write_text(CHAOS_SWEEP.replace("EPOCHS", str(epochs)))
    base_env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    base_env.pop(FAULTS_ENV, None)
    t0 = time.perf_counter()
    reference = _lab(
        [*_sweep_args(exp, workdir / "calm", workdir / "calm-reports"), "--num-cpus", "4"],
        workdir,
        base_env,
        "calm",
    )
    _finish(reference, "the undisturbed sweep", 900)
    reference_s = time.perf_counter() - t0

    faults = trial_faults(seed, trial_kills, epochs)
    env = {**LoopbackCluster.env(), FAULTS_ENV: ",".join(faults)}
    cluster = LoopbackCluster()
    store_root = workdir / "chaos" / "chaos"
    args = [*_sweep_args(exp, workdir / "chaos", workdir / "chaos-reports")]
    args += ["--address", cluster.address]
    injected: list[str] = []
    try:
        worker = cluster.start()
        t0 = time.perf_counter()
        driver = _lab(args, workdir, env, "driver")
        try:
            _wait_for(
                driver,
                store_root,
                lambda rows: (
                    sum(
                        r.get("status") == "running" and (r.get("epochs_done") or 0) >= 1
                        for r in rows
                    )
                    >= 1
                ),
                "a trial trained an epoch",
            )
            cluster.kill_node(worker)
            injected.append("node lost")
            _wait_for(
                driver,
                store_root,
                lambda rows: (
                    any(r.get("status") == "finished" for r in rows)
                    and any(r.get("status") == "running" for r in rows)
                ),
                "a trial finished while another ran",
            )
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            injected.append("driver killed")
        finally:
            if driver.poll() is None:
                driver.kill()
        resumed = _lab([*args, "--resume"], workdir, env, "resumed")
        _finish(resumed, "the resumed sweep", 900)
        chaos_s = time.perf_counter() - t0
    finally:
        cluster.shutdown()

    calm, chaos = TrialStore(workdir / "calm" / "chaos"), TrialStore(store_root)
    for key in KEYS:
        folder = chaos.trial_dir(key) / "faults"
        injected += [p.read_text().strip() for p in sorted(folder.glob("*.fired"))]
    lost, changed, once = [], [], True
    for key in KEYS:
        ref, row = calm.read(key), chaos.read(key)
        assert ref is not None and ref["status"] == "finished", f"undisturbed {key}: {ref}"
        if row is None or row.get("status") != "finished":
            lost.append(key)
            continue
        ours, theirs = chaos.trial_dir(key) / "train", calm.trial_dir(key) / "train"
        if any(row.get(c) != ref.get(c) for c in COMPARED) or not _same_training(ours, theirs):
            changed.append(key)
        once = once and _epochs_once(ours, epochs)
    rows = [chaos.read(k) or {} for k in KEYS]
    return ChaosResult(
        faults=injected,
        retried=sum(int(r.get("attempts") or 1) > 1 for r in rows),
        lost=lost,
        changed=changed,
        epochs_once=once,
        reference_s=reference_s,
        chaos_s=chaos_s,
        attempts={k: int(r.get("attempts") or 1) for k, r in zip(KEYS, rows)},
    )
