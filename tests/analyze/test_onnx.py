"""ONNX export of the deploy models, checked against torch with ONNX Runtime.

Needs the optional extra (``pip install -e ".[onnx]"``; the ``dev`` extra CI installs has it).
"""

from __future__ import annotations

import json

import pytest

from scaling_lab import list_models, resolve_spec
from scaling_lab.analyze import onnx_export
from scaling_lab.cli import main
from scaling_lab.models import create_model

ort = pytest.importorskip(
    "onnxruntime",
    reason="onnxruntime is not installed: ONNX export checks need the 'onnx' extra "
    "(pip install -e '.[onnx]')",
)
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[onnx]')")

SIZE = 320
YOLOV7_FAMILY = [n for n in list_models() if resolve_spec(n).family == "YOLOv7"]


# the default run exports one model of each kind (tiny, P5 with RepConvs, P6); the P6 models
# of 100M+ parameters (3-8 s each) and yolov7x export with the slow tests
EXPORTED_BY_DEFAULT = {"yolov7-tiny", "yolov7", "yolov7-w6"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in EXPORTED_BY_DEFAULT else pytest.mark.slow)
        for name in YOLOV7_FAMILY
    ],
)
def test_zoo_deploy_model_exports_and_matches_torch(name, tmp_path):
    # the deploy architecture built directly (fresh weights): the same graph, ops and
    # parameter layout that reparameterize produces, without building the training form
    module = create_model(name, img_size=SIZE, deploy=True).eval()
    path = onnx_export.export_onnx(module, tmp_path / f"{name}.onnx", img_size=SIZE)
    assert onnx_export.onnx_input_shape(path) == (1, 3, SIZE, SIZE)
    check = onnx_export.check_onnx(module, path, img_size=SIZE)
    # scores (in [0, 1]) within 1e-4 absolute; boxes (input pixels, up to ~2000 on P6
    # models, where float32 steps are 1e-4..2e-4) within 1e-4 relative
    assert check.max_abs_diff_scores <= 1e-4, check
    assert check.ok, check


def test_dynamic_batch_export_runs_batch_2(tmp_path):
    summary = onnx_export.export_and_check(
        "yolov7-tiny", tmp_path / "tiny.onnx", img_size=SIZE, dynamic_batch=True
    )
    assert onnx_export.onnx_input_shape(summary["path"]) == ("batch", 3, SIZE, SIZE)
    check = summary["check"]
    assert tuple(check["batches"]) == (1, 2)
    assert check["ok"] and check["max_abs_diff_scores"] <= 1e-4
    session = ort.InferenceSession(summary["path"], providers=["CPUExecutionProvider"])
    import numpy as np

    out = session.run(None, {"images": np.zeros((2, 3, SIZE, SIZE), np.float32)})[0]
    assert out.shape == (2, 3 * (40 * 40 + 20 * 20 + 10 * 10), 85)  # 3 anchors, P3-P5 at 320


def test_ort_latency_uses_the_same_protocol(tmp_path):
    module = create_model("yolov7-tiny", img_size=64, deploy=True)
    path = onnx_export.export_onnx(module, tmp_path / "t.onnx", img_size=64, dynamic_batch=True)
    result = onnx_export.ort_latency(
        path, img_size=64, model_name="t", batch=2, threads=1, warmup=1, iters=3
    )
    p = result.protocol
    assert p.runtime.startswith("onnxruntime") and (p.batch, p.threads, p.iters) == (2, 1, 3)
    assert result.stats.n == 3 and result.fps > 0
    fixed = onnx_export.export_onnx(module, tmp_path / "f.onnx", img_size=64)
    with pytest.raises(onnx_export.SpecError, match="dynamic-batch"):
        onnx_export.ort_latency(fixed, img_size=64, model_name="f", batch=2, iters=1)


def test_lab_export_checks_and_benches(tmp_path, capsys):
    path = tmp_path / "out" / "tiny.onnx"
    argv = ["export", "yolov7-tiny", "--onnx", str(path), "--img", "64", "--json"]
    assert main([*argv, "--bench", "--iters", "2", "--warmup", "0", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert path.is_file() and data["img_size"] == 64 and data["model"] == "yolov7-tiny-deploy"
    assert data["check"]["ok"] and data["latency"]["protocol"]["runtime"].startswith("onnxruntime")


def test_lab_export_text(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    assert main(["export", "yolov7-tiny", "--onnx", str(path), "--img", "64"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "check vs torch" in out and "ok" in out
