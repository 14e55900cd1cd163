"""Can CPU training be made bit-identical across machines with different vector ISAs?

Trains the same tiny run (yolov7-tiny, synthetic data, one thread) several times in fresh
processes under different kernel pins and prints a hash of each run's final weights and its
AP50, so one can read off (a) whether two runs on this machine agree bit for bit, and (b)
whether pinning ATen, oneDNN and MKL to AVX2 changes what an AVX-512 machine computes (if it
does not, the pins are inert; if it does, a machine without AVX-512 can at best match the
pinned runs, which this script cannot show without such a machine). Usage:

    .venv/bin/python benchmarks/isa_pinning.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

PINS = {
    "default": {},
    "ATen AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "oneDNN AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL AVX2": {"MKL_CBWR": "AVX2"},
    "AVX2 pinned": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "AVX2",
    },
}


def _train(out: Path, epochs: int, env: dict[str, str]) -> tuple[str, float, dict]:
    lab = str(Path(sys.executable).with_name("lab"))
    args = [
        lab,
        "train",
        "--model",
        "yolov7-tiny",
        "--data",
        "synth:images=32,size=64",
        "--img",
        "64",
        "--epochs",
        str(epochs),
        "--batch",
        "8",
        "--nominal-batch",
        "8",
        "--warmup-min-steps",
        "0",
        "--seed",
        "0",
        "--out",
        str(out),
        "--no-tensorboard",
    ]
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    subprocess.run(args, check=True, env=full, stdout=subprocess.DEVNULL)
    state = torch.load(out / "weights" / "last.pt", map_location="cpu", weights_only=False)
    digest = hashlib.sha256()
    for name, tensor in sorted(state["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    metrics = json.loads((out / "metrics.json").read_text())
    return digest.hexdigest()[:16], metrics["metrics"].get("AP50"), metrics.get("machine", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in PINS.items():
            for i in range(args.repeats):
                digest, ap50, card = _train(Path(tmp) / f"{name}-{i}", args.epochs, env)
                print(
                    f"{name:12s} run {i}: weights {digest}  AP50 {ap50:.6f}  "
                    f"ATen ISA {card.get('aten_isa')}  pins {card.get('isa_pins')}"
                )


if __name__ == "__main__":
    main()
