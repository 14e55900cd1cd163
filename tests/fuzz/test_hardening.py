"""The hardening the fuzz relies on, case by case: semantic checks, names, output paths,
atomic writes, the embedded Ray's address, a sweep whose trials all fail."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.atomic import atomic_write_text
from scaling_lab.errors import UserError
from scaling_lab.spec import SpecError
from tests.helpers.fuzz import assert_one_line, lab
from tests.helpers.specs import TINY_SPEC, graph_from

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("  head: {type: detect, from: [rep3, rep4]}\n", ""),
            "no detection head",
        ),
        (lambda t: t + "  head2: {type: detect, from: [rep3, rep4]}\n", "2 detection heads"),
        (lambda t: t + "  after: {type: conv, c: 8, from: rep3}\n", "must be the model's output"),
        (lambda t: t.replace("  fuse:", "  scale:"), "'scale' is reserved"),
        (lambda t: t.replace("  fuse:", "  __x:"), "reserved for internal keys"),
        (lambda t: t.replace("  fuse:", "  __lines__:"), "'__lines__' is a reserved key"),
        (lambda t: t.replace("depth: 2", "depth: 100000000"), "MAX_BLOCK_DEPTH"),
        (lambda t: t.replace("c: 16,", "c: 100000000000,"), "out of range"),
    ],
)
def test_semantic_spec_checks(edit, message):
    with pytest.raises(SpecError, match=message):
        graph_from(edit(TINY_SPEC), require_head=True)


def test_the_yaml_reader_bounds_aliases_depth_and_size(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh")
    )
    cases = {
        "laughs.yaml": (laughs, "once aliases are expanded"),
        "deep.yaml": ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32"),
        "loop.yaml": ("a: &a [*a]\n", "alias refers to a value that contains it"),
        "big.yaml": ("# " + "x" * (5 << 20), "too large"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        result = lab("profile", str(tmp_path / name))
        assert_one_line(result, may_succeed=False)
        assert message in result.stderr
    (tmp_path / "bytes.yaml").write_bytes(b"nodes:\n  a: \xff\n")
    result = lab("profile", str(tmp_path / "bytes.yaml"))
    assert "bytes.yaml:2: not UTF-8" in result.stderr
    (tmp_path / "dev.yaml").symlink_to("/dev/zero")
    assert "not a regular file" in lab("profile", str(tmp_path / "dev.yaml")).stderr


def test_a_chain_written_consumers_first_is_sorted_without_recursion():
    n = 4000  # far beyond Python's recursion limit
    text = "nodes:\n" + "".join(f"  n{i}: {{type: conv, c: 8, from: n{i + 1}}}\n" for i in range(n))
    graph = graph_from(text + f"  n{n}: {{type: conv, c: 8, from: input}}\n")
    assert graph.names[0] == f"n{n}" and graph.names[-1] == "n0"


def test_unknown_hyp_keys_are_refused_with_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = lab("train", "--model", "yolov7-tiny", "--data", "synth", "--hyp", "lr00=0.1")
    assert_one_line(result, may_succeed=False)
    assert "unknown hyper-parameter 'lr00' (known: lr0, lrf" in result.stderr


def test_output_paths_are_checked_before_any_work(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC)
    (tmp_path / "file").write_text("")
    for argv, message in [
        (["import", str(spec), "--out", str(tmp_path)], "is a folder"),
        (["import", str(spec), "--out", str(tmp_path / "file" / "x.yaml")], "is not a folder"),
        (["data", "synth", "--out", str(tmp_path / "file")], "exists and is not a folder"),
        (["profile", "--zoo", "--out", str(tmp_path / "file")], "exists and is not a folder"),
    ]:
        result = lab(*argv)
        assert_one_line(result, may_succeed=False)
        assert message in result.stderr, result.stderr


def test_coco_file_names_stay_under_the_images_folder(tmp_path, monkeypatch):
    import json

    from scaling_lab.data.sources import ALLOW_OUTSIDE_ENV, parse_coco

    ann = tmp_path / "ann.json"
    entry = {"id": 1, "file_name": "../../etc/passwd", "width": 8, "height": 8}
    ann.write_text(json.dumps({"images": [entry], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(UserError, match="points outside the images folder"):
        parse_coco(ann, tmp_path / "images", check_files=False)
    monkeypatch.setenv(ALLOW_OUTSIDE_ENV, "1")
    records, _ = parse_coco(ann, tmp_path / "images", check_files=False)
    assert records[0].path.name == "passwd"


def test_a_model_that_does_not_fit_is_refused_before_allocation(monkeypatch):
    import scaling_lab.nn.memory as memory
    from scaling_lab.models import get_layer_graph

    monkeypatch.setattr(memory, "memory_left", lambda: 1 << 30)
    layers = get_layer_graph("yolov7", img_size=1280)
    with pytest.raises(UserError, match=r"more than the 0\.9 GB of memory left"):
        memory.check_fits(layers, batch=8)
    memory.check_fits(get_layer_graph("yolov7-tiny", img_size=320))


def test_atomic_writes_keep_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a" / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text() == "x"


def test_a_sweep_whose_trials_all_fail_exits_1(tmp_path, monkeypatch):
    import scaling_lab.sweep.runner as runner

    frame = pd.DataFrame({"status": ["failed", "failed"], "error": ["DataError: boom", None]})
    monkeypatch.setattr(runner, "run_sweep", lambda experiment, **kw: frame)
    exp = tmp_path / "exp.yaml"
    exp.write_text("base: yolov7-tiny\nvariants: [a, b]\n")
    result = lab("sweep", str(exp), "--storage", str(tmp_path / "runs"), "--no-report")
    assert result.status == 1
    assert result.stderr.startswith(
        "lab sweep: error: all 2 trials failed (first: DataError: boom)"
    )


def test_the_embedded_ray_listens_on_loopback_only():
    code = (
        "import ray; from scaling_lab.sweep.runner import init_ray; init_ray(None, 1); "
        "print(ray.get_runtime_context().gcs_address); "
        "print(ray.nodes()[0]['NodeManagerAddress']); ray.shutdown()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    gcs, node = out.stdout.split()[-2:]
    assert gcs.startswith("127.0.0.1:") and node == "127.0.0.1", out.stdout + out.stderr
