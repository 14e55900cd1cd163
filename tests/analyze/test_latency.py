"""Latency protocol: statistics, protocol card, request errors, NMS, `lab bench --json`.

Timings here use tiny models and a handful of calls; nothing asserts a speed (the speed
claims live in benchmarks/latency.py's output)."""

from __future__ import annotations

import json

import pytest
import torch

from scaling_lab.analyze import latency, timing
from scaling_lab.cli import main
from scaling_lab.nn import postprocess
from scaling_lab.spec.errors import SpecError

PROTOCOL_KEYS = {
    "model",
    "form",
    "runtime",
    "device",
    "device_name",
    "dtype",
    "batch",
    "img_size",
    "channels_last",
    "compile",
    "cuda_graph",
    "threads",
    "warmup",
    "iters",
    "timer",
    "statistic",
    "memory",
    "torch_version",
}
QUICK = {"warmup": 1, "iters": 3}


# --- statistics from known samples ------------------------------------------------------


def test_timing_stats_of_known_samples():
    s = timing.timing_stats([5.0, 1.0, 4.0, 2.0, 3.0])  # order must not matter
    assert (s.n, s.median_ms, s.min_ms, s.max_ms, s.mean_ms) == (5, 3.0, 1.0, 5.0, 3.0)
    assert s.p90_ms == pytest.approx(4.6)  # rank 0.9 * 4 = 3.6: 4 + 0.6 * (5 - 4)


def test_timing_stats_even_count_and_single():
    s = timing.timing_stats([10.0, 20.0, 30.0, 40.0])
    assert s.median_ms == 25.0 and s.p90_ms == pytest.approx(37.0)
    one = timing.timing_stats([7.5])
    assert one.median_ms == one.p90_ms == one.min_ms == one.max_ms == 7.5


def test_percentile_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    values = sorted([3.1, 0.2, 9.9, 4.4, 4.4, 7.0, 1.5])
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert timing.percentile(values, q) == pytest.approx(float(np.percentile(values, 100 * q)))
    with pytest.raises(ValueError):
        timing.timing_stats([])


def test_fps_is_batch_over_median():
    assert timing.fps(1, 20.0) == pytest.approx(50.0)
    assert timing.fps(4, 20.0) == pytest.approx(200.0)


def test_time_calls_counts_each_call():
    calls = []
    samples = timing.time_calls(lambda: calls.append(1), 4)
    assert len(samples) == 4 == len(calls) and all(s >= 0 for s in samples)


# --- requests ---------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(SpecError, match="CUDA was requested") as err:
        timing.resolve_request(device="cuda")
    assert err.value.field == "device"


def test_fp16_on_cpu_is_refused_bf16_allowed():
    with pytest.raises(SpecError, match="fp16") as err:
        timing.resolve_request(device="cpu", dtype="fp16")
    assert err.value.field == "dtype"
    assert timing.resolve_request(device="cpu", dtype="bf16").dtype == "bf16"


@pytest.mark.parametrize("batch", [0, -1])
def test_bad_batch_is_refused(batch):
    with pytest.raises(SpecError, match="batch") as err:
        timing.resolve_request(batch=batch)
    assert err.value.field == "batch"


def test_cuda_graph_on_cpu_is_refused():
    with pytest.raises(SpecError, match=r"cuda-graph|CUDA graph") as err:
        timing.resolve_request(device="cpu", cuda_graph=True)
    assert err.value.field == "cuda-graph"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"iters": 0}, "iters"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
    ],
)
def test_other_bad_requests_name_the_field(kwargs, field):
    with pytest.raises(SpecError) as err:
        timing.resolve_request(**kwargs)
    assert err.value.field == field


def test_benchmark_checks_before_building(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("built a model for a bad request")

    monkeypatch.setattr(latency, "deploy_model", fail)
    with pytest.raises(SpecError):
        latency.benchmark("yolov7-tiny", batch=0)
    with pytest.raises(SpecError):
        latency.benchmark("yolov7-tiny", dtype="fp16")


def test_paper_preset_sizes_and_conflicts():
    assert latency.apply_preset(
        "paper", max_stride=32, device=None, dtype=None, batch=None, img_size=None
    ) == ("cuda", "fp16", 1, 640)
    assert latency.apply_preset(
        "paper", max_stride=64, device="cuda:0", dtype=None, batch=1, img_size=None
    ) == ("cuda:0", "fp16", 1, 1280)
    with pytest.raises(SpecError, match="batch") as err:
        latency.apply_preset(
            "paper", max_stride=32, device=None, dtype=None, batch=2, img_size=None
        )
    assert err.value.field == "preset"
    with pytest.raises(SpecError):
        latency.apply_preset(
            "paper", max_stride=32, device="cpu", dtype=None, batch=None, img_size=None
        )
    with pytest.raises(SpecError):
        latency.apply_preset(
            "nope", max_stride=32, device=None, dtype=None, batch=None, img_size=None
        )


# --- measuring --------------------------------------------------------------------------


def test_benchmark_result_carries_the_protocol():
    result = latency.benchmark("yolov7-tiny", img_size=128, threads=1, **QUICK)
    p = result.protocol
    assert p.model == "yolov7-tiny-deploy" and p.form == "deploy"
    assert (p.device, p.dtype, p.batch, p.img_size, p.threads) == ("cpu", "fp32", 1, 128, 1)
    assert (p.warmup, p.iters) == (1, 3) and p.torch_version == torch.__version__
    assert "RSS" in p.memory and "perf_counter" in p.timer
    assert len(result.samples_ms) == 3 and result.stats == timing.timing_stats(result.samples_ms)
    assert result.fps == pytest.approx(1000.0 / result.stats.median_ms)
    assert result.peak_memory_mb > 0
    data = result.to_dict()
    assert set(data["protocol"]) >= PROTOCOL_KEYS
    assert data["latency_ms"] == pytest.approx(result.stats.median_ms, abs=1e-3)
    text = result.format()
    assert "median" in text and "protocol" in text and "torch" in text


def test_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    result = latency.benchmark("yolov7-tiny", img_size=64, threads=1, warmup=0, iters=1)
    assert result.protocol.threads == 1 and torch.get_num_threads() == before


def test_training_form_channels_last_bf16_and_batch():
    result = latency.benchmark(
        "yolov7-tiny",
        img_size=64,
        form="training",
        dtype="bf16",
        channels_last=True,
        batch=2,
        **QUICK,
    )
    p = result.protocol
    assert p.form == "training" and p.model.endswith("-training")
    assert (p.dtype, p.batch, p.channels_last) == ("bf16", 2, True)
    assert result.fps == pytest.approx(2000.0 / result.stats.median_ms)


def test_measure_latency_times_any_module():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    result = latency.measure_latency(module, img_size=16, model_name="toy", **QUICK)
    assert result.protocol.model == "toy" and result.stats.n == 3


# --- NMS --------------------------------------------------------------------------------


def test_bench_nms_is_evaluation_nms(monkeypatch):
    """``--nms`` times ``nn.postprocess.non_max_suppression``, the function evaluation calls
    (tests/train/test_coco_eval.py checks evaluation's side), with evaluation's defaults."""
    calls = []
    real = postprocess.non_max_suppression

    def spy(pred, *args, **kwargs):
        out = real(pred, *args, **kwargs)
        calls.append((args, kwargs, sum(len(d) for d in out)))
        return out

    monkeypatch.setattr(postprocess, "non_max_suppression", spy)
    g = torch.Generator().manual_seed(0)
    pred = torch.cat(
        [torch.rand(2, 200, 2, generator=g) * 64, torch.rand(2, 200, 5, generator=g)], -1
    )
    request = timing.resolve_request(warmup=2, iters=3)
    result = latency.time_nms(pred, request)
    assert len(calls) == 1 + 2 + 3  # the counted call, warm-up, timed calls
    args, kwargs, kept = calls[0]
    assert tuple(args) + tuple(kwargs.values()) == (0.001, 0.65, 300)
    assert result.kept == kept == sum(len(d) for d in real(pred))
    assert result.candidates == postprocess.count_candidates(pred)
    assert (result.conf_thres, result.iou_thres, result.max_det) == (0.001, 0.65, 300)
    assert latency.resolve_request is timing.resolve_request  # still importable from latency


def test_benchmark_with_nms_returns_boxes():
    result = latency.benchmark("yolov7-tiny", img_size=64, nms=True, conf_thres=0.0, **QUICK)
    n = result.nms
    assert n is not None and n.stats.n == 3 and n.candidates > 0 and 0 < n.kept <= n.max_det
    assert result.to_dict()["nms"]["median_ms"] == n.stats.median_ms
    assert "NMS" in result.format()


# --- CLI --------------------------------------------------------------------------------


def test_lab_bench_json_keys(capsys):
    args = ["bench", "yolov7-tiny", "--img", "64", "--threads", "1", "--warmup", "1"]
    assert main([*args, "--iters", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("model", "latency_ms", "p90_ms", "min_ms", "fps", "peak_memory_mb", "samples_ms"):
        assert key in data
    assert set(data["protocol"]) >= PROTOCOL_KEYS
    assert data["protocol"]["img_size"] == 64 and data["protocol"]["threads"] == 1
    assert len(data["samples_ms"]) == 2


def test_lab_bench_text_prints_protocol(capsys):
    assert main(["bench", "yolov7-tiny", "--img", "64", "--warmup", "0", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "FPS" in out and "protocol" in out and "torch" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dtype", "fp16"], "fp16"),
        (["--cuda-graph"], "cuda-graph"),
        (["--warmup", "-1"], "warmup"),
    ],
)
def test_lab_bench_bad_input_exits_2(flags, message, capsys):
    assert main(["bench", "yolov7-tiny", "--img", "64", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab bench: error:") and message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_lab_bench_cuda_without_cuda_exits_2(capsys):
    assert main(["bench", "yolov7-tiny", "--device", "cuda"]) == 2
    assert "CUDA was requested" in capsys.readouterr().err


def test_lab_bench_batch_zero_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "yolov7-tiny", "--batch", "0"])
    assert exc.value.code == 2
    assert "--batch" in capsys.readouterr().err


def test_lab_profile_latency_json(capsys):
    argv = ["profile", "yolov7-tiny", "--img", "64", "--json", "--latency", "--iters", "2"]
    assert main([*argv, "--warmup", "0", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] > 0 and data["latency_ms"] > 0 and data["fps"] > 0
    assert data["protocol"]["form"] == "deploy" and data["protocol"]["iters"] == 2


def test_lab_profile_without_latency_has_no_latency_keys(capsys):
    assert main(["profile", "yolov7-tiny", "--img", "64", "--json"]) == 0
    assert "latency_ms" not in json.loads(capsys.readouterr().out)


# --- GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_fp16_events_and_memory():
    result = latency.benchmark("yolov7-tiny", img_size=320, device="cuda", dtype="fp16", **QUICK)
    p = result.protocol
    assert p.device.startswith("cuda") and p.dtype == "fp16" and "CUDA events" in p.timer
    assert "max_memory_allocated" in p.memory and result.peak_memory_mb > 0


@pytest.mark.gpu
def test_cuda_graph_and_paper_preset():
    result = latency.benchmark("yolov7-tiny", device="cuda", cuda_graph=True, **QUICK)
    assert result.protocol.cuda_graph and "CUDA graph" in result.protocol.timer
    paper = latency.benchmark("yolov7-tiny", preset="paper", nms=True, **QUICK)
    p = paper.protocol
    assert (p.dtype, p.batch, p.img_size, p.preset) == ("fp16", 1, 640, "paper")
    assert paper.nms is not None


@pytest.mark.gpu
def test_cuda_graph_output_matches_eager():
    from scaling_lab.models import create_model
    from scaling_lab.nn.reparam import reparameterize

    model = reparameterize(create_model("yolov7-tiny", img_size=320)).cuda()
    x = torch.rand(1, 3, 320, 320, device="cuda")
    request = timing.resolve_request(device="cuda", warmup=2, iters=1)
    with torch.inference_mode():
        step, output = latency._prepare(model, x, request, cuda_graph=True)
        step()
        assert torch.allclose(output(), model(x), atol=1e-3, rtol=1e-4)
