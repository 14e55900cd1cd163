#!/usr/bin/env bash
# The checks that need a GPU, in one run (issues #13 item 7 and #16 item 6):
#
#   1. the environment: GPU, driver, torch and its CUDA;
#   2. the `gpu`-marked tests (CUDA paths of re-parameterization, training, latency);
#   3. a CUDA latency table (fp16, batch 1) and the predictor's accuracy on the GPU:
#      benchmarks/latency_predictor.py --device cuda --dtype fp16 (the zoo's YOLOv7 family at
#      320 and 640 and 30 designs of search_spaces/elan_tiny.yaml);
#   4. the paper's FPS protocol (`lab bench --preset paper`) for the YOLOv7 family;
#   5. a 4-trial training sweep of experiments/elan_search.yaml with resources {gpu: 0.5}
#      (two trials share the GPU), its table and its wall time.
#
# Everything goes to $OUT_DIR (default reports/gpu/<GPU name>): one folder per step and
# gpu_check.log with every command's output. A step that fails is logged and the next one
# runs; the exit status is the number of failed steps.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with CUDA, ~10 min on an H100
#   SMOKE=1 bash benchmarks/gpu_check.sh         # every step on the CPU at toy size (~3 min):
#                                                # checks the script itself, measures nothing
#
# PYTHON picks the interpreter (default .venv/bin/python when it exists, else python3); the
# project must be installed in it (`pip install -e ".[dev]"`).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SMOKE=${SMOKE:-0}
export PYTHONUNBUFFERED=1

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu DTYPE=fp32 NAME=cpu-smoke
else
    DEVICE=cuda DTYPE=fp16
    if ! NAME=$("$PYTHON" -c 'import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))' 2>/dev/null); then
        echo "gpu_check: torch in $PYTHON sees no CUDA device; nothing measured (SMOKE=1 checks the script on the CPU)" >&2
        exit 2
    fi
fi
SLUG=$(echo "$NAME" | tr -cs 'A-Za-z0-9._-' '-' | sed 's/-*$//')
OUT_DIR=${OUT_DIR:-reports/gpu/$SLUG}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
FAILED=0
T_START=$(date +%s)

step() {  # step NAME COMMAND...: run it, log it, time it, count a failure
    local name=$1
    shift
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$LOG"
    if "$@" 2>&1 | tee -a "$LOG"; then
        echo "== $name: ok in $(($(date +%s) - t0)) s" | tee -a "$LOG"
    else
        echo "== $name: FAILED (status $?) after $(($(date +%s) - t0)) s" | tee -a "$LOG"
        FAILED=$((FAILED + 1))
    fi
}

environment() {
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$PYTHON" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, CUDA available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, sm_{p.major}{p.minor}")
EOF
}

gpu_tests() {
    if [ "$SMOKE" = 1 ]; then  # without CUDA the gpu tests skip: show that they are collected
        "$PYTHON" -m pytest -o addopts="" -m gpu -q -p no:cacheprovider --co
    else
        "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" --junitxml="$OUT_DIR/gpu_tests.xml"
    fi
}

predictor() {
    local extra=()
    [ "$SMOKE" = 1 ] && extra=(--quick)
    "$PYTHON" benchmarks/latency_predictor.py --device "$DEVICE" --dtype "$DTYPE" \
        --out "$OUT_DIR/latency_predictor" "${extra[@]}"
}

paper_fps() {
    local models=(yolov7-tiny yolov7 yolov7x yolov7-w6 yolov7-e6 yolov7-d6 yolov7-e6e)
    local flags=(--preset paper)
    [ "$SMOKE" = 1 ] && models=(yolov7-tiny) flags=(--device cpu --img 128 --iters 3 --warmup 1)
    : >"$OUT_DIR/fps_paper.jsonl"  # a rerun into the same folder starts the file afresh
    for m in "${models[@]}"; do
        "$PYTHON" -m scaling_lab.cli bench "$m" "${flags[@]}" --json >>"$OUT_DIR/fps_paper.jsonl" || return 1
    done
    "$PYTHON" - "$OUT_DIR/fps_paper.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r.get('model', '?'):<14} {r.get('latency_ms', float('nan')):8.2f} ms  {r.get('fps', float('nan')):8.1f} FPS")
EOF
}

sweep() {  # elan_search, 4 trials, two per GPU; the space path made absolute
    local exp="$OUT_DIR/elan_search_gpu.yaml"
    "$PYTHON" - "$exp" "$SMOKE" <<'EOF'
import sys
from pathlib import Path
import yaml
out, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
spec = yaml.safe_load(Path("experiments/elan_search.yaml").read_text())
spec["description"] = "ELAN search, 4 trials sharing the GPU two by two (benchmarks/gpu_check.sh)"
spec["search"]["space"] = str(Path("search_spaces/elan_tiny.yaml").resolve())
spec["search"]["trials"] = 4
spec["resources"] = {"cpu": 1, "gpu": 0} if smoke else {"cpu": 4, "gpu": 0.5}
spec["max_concurrent"] = 2
# the sharing of the GPU is measured on the search's trials alone: no screen, no baseline
# runs, no confirm phase, and params as the cost (the latency table is the CPU's)
for key in ("screen", "confirm", "latency"):
    spec.pop(key, None)
spec["baselines"] = []
spec["metrics"] = [m for m in spec["metrics"] if m != "latency_pred"]
spec["search"]["objectives"] = {"AP50": "max", "params": "min"}
spec["note"] = (
    "The elan_search budget (synthetic shapes, 128 px, 10 epochs, ASHA grace 6), 4 trials, "
    + ("on the CPU at toy size (smoke run)." if smoke else "two trials sharing each GPU.")
)
if smoke:  # a toy budget: the script's plumbing, not a measurement
    spec["train"].update(data="synth:images=24,size=64,val_fraction=0.25", img_size=64, epochs=2)
    spec["scheduler"]["grace_period"] = 1
out.write_text(yaml.safe_dump(spec, sort_keys=False))
EOF
    local t0=$(date +%s)
    local store  # checkpoints and Ray's files: bulk, kept out of reports/
    store=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_sweep.XXXXXX")
    "$PYTHON" -m scaling_lab.cli sweep "$exp" --storage "$store" --reports "$OUT_DIR/sweep" || return 1
    echo "sweep wall time: $(($(date +%s) - t0)) s"
    rm -rf "$store"
}

step environment environment
step gpu_tests gpu_tests
step latency_predictor predictor
step paper_fps paper_fps
step sweep sweep
echo "gpu_check ($NAME): $FAILED failed step(s), $(($(date +%s) - T_START)) s; results in $OUT_DIR" | tee -a "$LOG"
exit "$FAILED"
