"""Malformed and hostile input over every surface a user controls: spec files, layer-list
configs, experiments, flags, datasets and checkpoints. Each case must end as the README
promises: exit status 2 and one line naming the problem (or, where a mutation left the input
valid, success), never a traceback, and nothing written outside the case's folder.

The cases run ``lab`` in this process (fast, bounded by hypothesis' ``deadline``); the
hostile inputs that would exhaust memory run in a subprocess under a 3 GB data limit
(``test_limits_hold_in_a_subprocess``). Examples are derandomized: CI sees the same cases.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.fuzz import (
    AcceptedError,
    assert_one_line,
    lab,
    mutated,
    nasty_value,
)
from tests.helpers.specs import TINY_SPEC

ROOT = Path(__file__).resolve().parents[2]
LAYER_LIST = (ROOT / "tests" / "fixtures" / "layer_list" / "v5_style.yaml").read_text()


# SCALING_LAB_FUZZ_SCALE=N: N times the examples, freshly random (a longer hunt than CI's)
SCALE = int(os.environ.get("SCALING_LAB_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    return settings(
        max_examples=examples * SCALE,
        deadline=timedelta(seconds=30),
        database=None,
        derandomize=SCALE == 1,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def case(tmp_path, monkeypatch):
    """The case's folder (the working folder); afterwards nothing may exist beside it."""
    import scaling_lab.sweep.runner as runner

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))

    def accepted(*args, **kwargs):
        raise AcceptedError

    monkeypatch.setattr(runner, "init_ray", accepted)
    yield work
    outside = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("work", "cache"))
    assert not outside, f"written outside the case's folder: {outside}"


# --- spec files ---------------------------------------------------------------------------


@fuzz(60)
@given(data=mutated(TINY_SPEC))
def test_mutated_spec_files(case, data):
    path = case / "spec.yaml"
    path.write_bytes(data)
    assert_one_line(lab("profile", str(path)))


NODE_NAMES = ["a", "b", "c", "head", "input", "scale", "train", "__x", "n1", "9x", "a.b"]
BLOCKS = ["conv", "concat", "add", "upsample", "elan", "detect", "aux_detect", "yolox_head", "bog"]


@st.composite
def graphs(draw) -> str:
    """Specs built node by node: random blocks, fields and inputs (cycles, unknown inputs,
    no head or several, reserved names, long chains written consumers first)."""
    lines = ["nc: 2", "img_size: 64", "anchors: [[10, 13, 16, 30, 33, 23]]", "nodes:"]
    if draw(st.integers(0, 9)) == 0:  # a chain written consumers first
        n = draw(st.integers(1, 3000))
        lines += [f"  n{i}: {{type: conv, c: 8, from: n{i + 1}}}" for i in range(n)]
        lines += [f"  n{n}: {{type: conv, c: 8, from: input}}", "  head: {type: detect, from: n0}"]
        return "\n".join(lines) + "\n"
    for _ in range(draw(st.integers(1, 8))):
        name = draw(st.sampled_from(NODE_NAMES))
        block = draw(st.sampled_from(BLOCKS))
        fields = {"type": block}
        if draw(st.booleans()):
            fields["from"] = draw(st.lists(st.sampled_from(NODE_NAMES), min_size=1, max_size=3))
        for key in draw(st.lists(st.sampled_from(["c", "k", "s", "depth", "c_hidden", "c_out"]))):
            fields[key] = draw(st.one_of(st.integers(-2, 64), nasty_value))
        body = ", ".join(
            f"{k}: {json.dumps(v) if isinstance(v, list) else v}" for k, v in fields.items()
        )
        lines.append(f"  {name}: {{{body}}}")
    return "\n".join(lines) + "\n"


@fuzz(60)
@given(text=graphs())
def test_generated_graphs(case, text):
    path = case / "graph.yaml"
    path.write_text(text)
    assert_one_line(lab("profile", str(path)))


# --- layer-list configs -------------------------------------------------------------------


@fuzz(40)
@given(data=mutated(LAYER_LIST))
def test_mutated_layer_lists(case, data):
    path = case / "config.yaml"
    path.write_bytes(data)
    assert_one_line(lab("import", str(path), "--out", str(case / "out" / "spec.yaml")))


# --- experiments --------------------------------------------------------------------------

TABLE = """\
base: yolov7-tiny
name: fz
metrics: [params, gflops, AP]
latency: {device: cpu, iters: 2, batch: 1}
train: {data: synth, epochs: 1, batch_size: 2, device: cpu, hyp: {lr0: 0.01}}
resources: {cpu: 1}
variants:
  - a
  - {label: b, overrides: {img_size: 320, elan1.depth: 2}, scale: {width: 0.5}}
"""

SEARCH = """\
base: yolov7-tiny
name: fz-search
metrics: [params, latency]
latency: {iters: 2}
search:
  space:
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
    elan2.depth: {type: int, low: 1, high: 4}
    train.epochs: {type: int, low: 1, high: 3}
  objectives: {params: min}
  constraints: ["params <= 40e6"]
  trials: 2
"""


def _sweep(case: Path, data: bytes):
    path = case / "experiment.yaml"
    path.write_bytes(data)
    return lab("sweep", str(path), "--storage", "runs", "--reports", "reports")


@fuzz(40)
@given(data=st.one_of(mutated(TABLE), mutated(SEARCH)))
def test_mutated_experiments(case, data):
    assert_one_line(_sweep(case, data))


@fuzz(20)
@given(data=st.data())
def test_experiment_names_stay_names(case, data):
    outside = str(case.parent / "outside")
    name = data.draw(
        st.sampled_from(["../outside", "../../outside", outside, "a/b", "..", ".", "x" * 200])
        | st.text(min_size=1, max_size=10)
    )
    text = TABLE.replace("name: fz", f"name: {json.dumps(name)}")
    result = _sweep(case, text.encode())
    is_name = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}", name) and ".." not in name
    assert_one_line(result, may_succeed=bool(is_name))
    assert not Path(outside).exists()


# --- flags --------------------------------------------------------------------------------

INTS = st.sampled_from(
    ["-1", "0", "1", "3", "65536", "1e3", "nan", "x", "", "99999999999999999999"]
)
FLOATS = st.sampled_from(["nan", "inf", "-1", "0", "1e300", "0.5", "x", "1e-320"])
MODELS = st.sampled_from(
    ["yolov7-tiny", "yolov7-tiny-deploy", "../x", "/dev/zero", "", "-", "x.yaml", "yolov7-bad"]
)


@st.composite
def argvs(draw) -> list[str]:
    """Command lines that cannot succeed cheaply-and-slowly: profile/show may succeed (they
    only count); the others always carry at least one refused value."""
    command = draw(
        st.sampled_from(["profile", "show", "bench", "fuse-check", "train", "eval", "synth"])
    )
    if command in ("profile", "show"):
        argv = [command, draw(MODELS)]
        for flag, values in [
            ("--img", INTS),
            ("--nc", INTS),
            ("--depth", FLOATS),
            ("--width", FLOATS),
            ("--scale-mode", st.sampled_from(["width", "depth", "compound", "x"])),
            ("--repconv", st.sampled_from(["none", "all", "planned", "x", "a=b", "*=repconv", ""])),
        ]:
            if draw(st.booleans()):
                argv += [flag, draw(values)]
        return argv
    if command == "bench":
        device = draw(st.sampled_from(["tpu", "cuda:99", "cpu:x", "gpu"]))
        return ["bench", draw(MODELS), "--device", device, "--iters", draw(INTS)]
    if command == "fuse-check":
        return [
            "fuse-check",
            draw(MODELS),
            "--img",
            draw(st.sampled_from(["0", "-3", "65536", "x"])),
        ]
    if command == "train":
        argv = ["train", "--model", draw(MODELS), "--data", "no-such-data", "--out", "runs/t"]
        for flag in ("--img", "--epochs", "--batch", "--workers", "--eval-every", "--seed"):
            if draw(st.booleans()):
                argv += [flag, draw(INTS)]
        if draw(st.booleans()):
            argv += ["--hyp", draw(st.sampled_from(["lr0=nan", "lr00=1", "=", "lr0", "mosaic=x"]))]
        if draw(st.booleans()):
            argv += ["--device", draw(st.sampled_from(["cuda:99", "tpu", "cpu:x", "cuda:-1"]))]
        return argv
    if command == "eval":
        weights = draw(st.sampled_from(["missing.pt", ".", "/dev/zero", "spec.yaml"]))
        return ["eval", "--weights", weights, "--data", "no-such-data", "--img", draw(INTS)]
    out = draw(st.sampled_from(["spec.yaml", "/dev/null/x", "synth-out"]))
    images = draw(st.sampled_from(["-1", "0", "1", "1000000000", "x"]))
    return ["data", "synth", "--out", out, "--images", images, "--size", draw(INTS)]


@fuzz(80)
@given(argv=argvs())
def test_flags(case, argv):
    (case / "spec.yaml").write_text(TINY_SPEC)
    may_succeed = argv[0] in ("profile", "show")
    assert_one_line(lab(*argv), may_succeed=may_succeed)


# --- datasets -----------------------------------------------------------------------------


def _coco(root: Path) -> dict:
    """A two-image COCO set, the same images and boxes in both splits; returns the JSON
    (written for the train split here, for the val split by the caller)."""
    from PIL import Image

    for split in ("train", "val"):
        images = root / "images" / split
        images.mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            Image.new("RGB", (32, 32), (i * 60, 0, 0)).save(images / f"{i}.jpg")
    data = {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": 32, "height": 32},
            {"id": 2, "file_name": "2.jpg", "width": 32, "height": 32},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 8], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return data


JSON_NASTY = st.one_of(
    st.sampled_from(
        [None, -1, 0, 1.5, "", "x", [], {}, [1, 2], True, 1e308, 2**70, "../../outside.jpg",
         "/etc/passwd", "a/../../b.jpg", "\u0000", [[[[[[]]]]]], {"id": "1"}]
    ),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=8),
)  # fmt: skip


@st.composite
def coco_mutations(draw) -> list[tuple[str, int, str, object]]:
    """Edits of the COCO JSON: (section, index, key, value); value ``...``: delete it."""
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["images", "annotations", "categories"]))
        key = draw(
            st.sampled_from(
                [
                    "id",
                    "file_name",
                    "image_id",
                    "category_id",
                    "bbox",
                    "width",
                    "height",
                    "iscrowd",
                    "name",
                ]
            )
        )
        value = draw(st.one_of(st.just(...), JSON_NASTY))
        steps.append((section, draw(st.integers(0, 1)), key, value))
    return steps


@fuzz(40)
@given(
    steps=coco_mutations(),
    raw=st.one_of(st.none(), st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 100000, b"null"])),
)
def test_mutated_coco_datasets(case, steps, raw):
    from scaling_lab.data.sources import resolve_data
    from scaling_lab.errors import UserError

    root = case / "coco"
    data = _coco(root)
    for section, index, key, value in steps:
        entry = data[section][index]
        if value is ...:
            entry.pop(key, None)
        else:
            entry[key] = value
    ann = root / "annotations" / "instances_val.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_bytes(raw if raw is not None else json.dumps(data).encode())
    try:
        info = resolve_data(root)
        info.records("val")
    except UserError as exc:
        assert "\n" not in str(exc)


@fuzz(30)
@given(
    labels=mutated("0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.3\n"),
    names=mutated("names: [a, b]\nnc: 2\n"),
)
def test_mutated_yolo_datasets(case, labels, names):
    from PIL import Image

    from scaling_lab.data.sources import resolve_data
    from scaling_lab.errors import UserError

    root = case / "yolo"
    (root / "images" / "val").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32)).save(root / "images" / "val" / "1.jpg")
    (root / "labels" / "val" / "1.txt").write_bytes(labels)
    (root / "data.yaml").write_bytes(names)
    try:
        resolve_data(root).records("val")
    except UserError as exc:
        assert "\n" not in str(exc)


# --- checkpoints --------------------------------------------------------------------------


class _Checkpoint(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing case
        return "<checkpoint of the tiny test model>"


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    """A checkpoint as the trainer writes it, of the tiny test model (2 classes, 64 px) after
    its one and only epoch: resuming it finishes at once."""
    from scaling_lab import create_model
    from scaling_lab.data.hyp import default_hyp
    from scaling_lab.graph.block_graph import dump_spec
    from scaling_lab.train.checkpoint import FORMAT, capture_rng
    from scaling_lab.train.config import TrainConfig
    from scaling_lab.train.optim import build_optimizer
    from tests.helpers.specs import graph_from

    graph = graph_from(TINY_SPEC.replace("nc: 3", "nc: 2"), require_head=True)
    model = create_model(graph)
    state = model.state_dict()
    rng = capture_rng()
    hyp = default_hyp("tiny")
    optimizer = build_optimizer(model, hyp, batch_size=2).state_dict()
    config = TrainConfig(
        model="spec.yaml", data="coco", epochs=1, batch_size=2, progress=False, tensorboard=False
    )
    return _Checkpoint({
        "format": FORMAT, "kind": "last", "spec": dump_spec(graph), "config": config.to_dict(),
        "hyp": hyp, "nc": 2, "model": state, "ema": {"module": state, "updates": 1},
        "optimizer": optimizer, "scaler": None, "epoch": 1,
        "step_in_epoch": 0, "global_step": 1, "last_opt_step": 0, "epoch_loss_sum": [0.0] * 4,
        "best_fitness": 0.0, "steps_per_epoch": 1, "world_size": 1,
        "ranks": [{"rng": rng, "rng_epoch_start": rng, "loader_rng": {}}],
    })  # fmt: skip


def test_the_undamaged_checkpoint_resumes(case, checkpoint):
    """The fuzz's starting point is valid: damage, not the fixture, is what gets refused."""
    import torch

    data = _coco(case / "coco")
    (case / "coco" / "annotations" / "instances_val.json").write_text(json.dumps(data))
    path = case / "run" / "weights" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(dict(checkpoint), path)
    result = lab("train", "--resume", str(case / "run"))
    assert result.status == 0, result.stderr


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch ../outside",))


@fuzz(30)
@given(
    key=st.sampled_from(
        ["spec", "config", "hyp", "model", "ema", "epoch", "ranks", "kind", "format"]
    ),
    value=st.one_of(st.just(...), JSON_NASTY, st.just("evil")),
    damage=st.sampled_from(["none", "truncate", "garbage", "evil"]),
    command=st.sampled_from(["eval", "resume"]),
)
def test_damaged_checkpoints(case, checkpoint, key, value, damage, command):
    import torch

    data = _coco(case / "coco")
    (case / "coco" / "annotations" / "instances_val.json").write_text(json.dumps(data))
    ckpt = dict(checkpoint)
    if value is ...:
        ckpt.pop(key, None)
    elif value == "evil":
        ckpt[key] = _Evil()
    else:
        ckpt[key] = value
    path = case / "run" / "weights" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.save(ckpt, path)
    except Exception:  # a value torch cannot save: write the clean one
        torch.save(dict(checkpoint), path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(256))
    elif damage == "evil":
        torch.save({"format": "x", "payload": _Evil()}, path)
    if command == "eval":
        result = lab("eval", "--weights", str(path), "--data", "no-such-data")
        assert_one_line(result, may_succeed=False)
    else:  # an undamaged checkpoint resumes and finishes at once
        result = lab("train", "--resume", str(case / "run"))
        assert_one_line(result, may_succeed=damage == "none")


# --- the limits, in a process of their own ------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)
LIMIT_CASES = {
    "yaml-aliases": (LAUGHS + "nodes: {x: *i}\n", ["profile", "{path}"]),
    "device-file": (None, ["profile", "{path}"]),
    "block-depth": (TINY_SPEC.replace("depth: 2", "depth: 100000000"), ["profile", "{path}"]),
    "deep-chain": (
        "nodes:\n"
        + "".join(f"  n{i}: {{type: conv, c: 8, from: n{i + 1}}}\n" for i in range(4999))
        + "  n4999: {type: conv, c: 8, from: input}\n",
        ["profile", "{path}"],
    ),
    "layer-list-repeats": (
        LAYER_LIST.replace("[-1, 3, C3, [128]]", "[-1, 100000000, Conv, [128, 3, 1]]"),
        ["import", "{path}"],
    ),
    "search-range": (
        SEARCH.replace("high: 4}", "high: 100000000000000000000}"),
        ["sweep", "{path}", "--storage", "runs", "--reports", "reports"],
    ),
    "image-size": (None, ["fuse-check", "yolov7", "--img", "8192"]),
    "huge-file": ("# " + "x" * (5 << 20) + "\n", ["profile", "{path}"]),
}


# The child runs `lab` under a 3 GB heap limit and reports its own peak resident memory
# (VmHWM of its address space) at exit. rusage from wait4 would not do: Linux carries the
# high-water mark of the process image before execve into the child's ru_maxrss, and that
# image is this (large) test process.
LAUNCH = (
    "import atexit, os, resource, runpy, sys\n"
    "data = 3 << 30  # 3 GB of heap: address space is not limited, torch maps more than that\n"
    "resource.setrlimit(resource.RLIMIT_DATA, (data, data))\n"
    "def peak():\n"
    "    with open('/proc/self/status') as f:\n"
    "        kib = next(line for line in f if line.startswith('VmHWM')).split()[1]\n"
    "    with open(os.environ['LAB_PEAK_FILE'], 'w') as out:\n"
    "        out.write(kib)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['lab', *sys.argv[1:]]\n"
    "runpy.run_module('scaling_lab.cli', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize("name", list(LIMIT_CASES))
def test_limits_hold_in_a_subprocess(tmp_path, name):
    text, argv = LIMIT_CASES[name]
    path = tmp_path / "input.yaml"
    if name == "device-file":
        path.symlink_to("/dev/zero")
    elif text is not None:
        path.write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-c", LAUNCH, *(a.format(path=path) for a in argv)]
    status, stderr, peak_kib, seconds = _run_measured(
        command, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, timeout=60
    )
    assert status == 2, stderr[-2000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], stderr[-2000:]
    print(f"{name}: peak {peak_kib / 2**10:.0f} MB, {seconds:.1f} s")
    assert peak_kib < 3 << 20, f"peak memory {peak_kib / 2**20:.1f} GB"
    assert seconds < 60


def _run_measured(
    command: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int, str, int, float]:
    """Exit status, stderr, peak resident memory (KiB, as the child reports it) and seconds of
    one child process, killed after ``timeout``."""
    import threading
    import time

    err_path = cwd / "stderr.txt"
    start = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**env, "LAB_PEAK_FILE": str(cwd / "peak_kib.txt")},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
    peak_kib = int((cwd / "peak_kib.txt").read_text())
    return proc.returncode, err_path.read_text(), peak_kib, time.monotonic() - start
