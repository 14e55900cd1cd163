"""``lab bench`` times an anchor-free head with its box decoding, as the YOLOv7 heads (which
decode inside their Detect module) are timed: the module it measures is the decoded one."""

from __future__ import annotations

import pytest

import scaling_lab.analyze.latency as latency
from scaling_lab.cli.app import main
from scaling_lab.train.heads import Decoded


@pytest.mark.parametrize(("model", "decoded"), [("yolox-s", True), ("yolov7-tiny", False)])
def test_lab_bench_times_the_decode(model, decoded, monkeypatch):
    timed = []

    def fake_measure(module, **kwargs):
        timed.append(module)
        raise SystemExit(0)  # the module is all this test needs

    monkeypatch.setattr(latency, "measure_latency", fake_measure)
    with pytest.raises(SystemExit):
        main(["bench", model, "--img", "64", "--threads", "1", "--iters", "1", "--warmup", "0"])
    (module,) = timed
    assert isinstance(module, Decoded) is decoded
