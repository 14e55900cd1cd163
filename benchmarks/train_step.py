"""Time one training step's parts: forward, loss (label assignment + loss terms), backward.

Random images and random targets (``--targets`` boxes per image, uniform centres, sides 2-50%
of the input), the training-form model, the YOLOv7 loss with the reference's P5/P6 hyp gains.
Each step: zero the gradients, forward, loss, backward (no optimizer step). The first
``--warmup`` steps are not timed; the median of the next ``--steps`` is reported per part, with
the label assignment alone timed separately (the same assignment the loss runs, called once
more outside the loss), and images/s for the whole step.

Usage::

    .venv/bin/python benchmarks/train_step.py                       # yolov7-tiny, 320, batch 16
    .venv/bin/python benchmarks/train_step.py --model yolov7-w6 --img 320 --batch 4
    .venv/bin/python benchmarks/train_step.py --threads 1 --targets 20
    .venv/bin/python benchmarks/train_step.py --assign reference     # the reference's rule

``benchmarks/assign_speed.py`` times the assignment + loss against the reference's own
``ComputeLossOTA`` side by side.

Timings on a shared CPU are noisy: the protocol lines give the load and the CPU time other
processes used while the steps ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import scaling_lab
from scaling_lab.data import default_hyp
from scaling_lab.train.loss import YoloV7Loss, find_detect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time forward, loss and backward of a step.")
    parser.add_argument("--model", default="yolov7-tiny", help="zoo name or spec path")
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--targets", type=int, default=8, help="boxes per image")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--aux-assigner",
        default="coarse_to_fine",
        choices=("independent", "lead_guided", "coarse_to_fine"),
    )
    parser.add_argument("--assign", default="own_prior", choices=("own_prior", "reference"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def random_targets(batch: int, per_image: int, nc: int, generator: torch.Generator) -> torch.Tensor:
    n = batch * per_image
    image = torch.arange(batch).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, nc, (n, 1), generator=generator).float()
    wh = torch.rand(n, 2, generator=generator) * 0.48 + 0.02
    xy = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
    return torch.cat((image, cls, xy, wh), 1)


def _busy_cpu_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = scaling_lab.create_model(args.model, img_size=args.img).to(device).train()
    det = find_detect(model)
    # the reference's hyp.scratch.p5 loss gains (before the trainer's rescaling)
    hyp = default_hyp("p5")
    loss_fn = YoloV7Loss(model, hyp, aux_assigner=args.aux_assigner, assign=args.assign)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch, 3, args.img, args.img, generator=gen).to(device)
    targets = random_targets(args.batch, args.targets, det.nc, gen).to(device)

    print(
        f"protocol: torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"device {device}, cpu '{_cpu_name()}' x{os.cpu_count()}, "
        f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"model {args.model} img {args.img} batch {args.batch}, {len(targets)} targets, "
        f"levels {det.n_levels}, aux head {'yes' if len(det.aux) else 'no'} "
        f"({args.aux_assigner}), assign {args.assign}, warmup {args.warmup}, "
        f"median of {args.steps} steps"
    )

    parts: dict[str, list[float]] = {"forward": [], "loss": [], "assign": [], "backward": []}
    busy0, own0, wall0 = _busy_cpu_seconds(), time.process_time(), time.perf_counter()
    for step in range(args.warmup + args.steps):
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        outputs = model(images)
        _sync(device)
        t1 = time.perf_counter()
        loss, _ = loss_fn(outputs, targets, images)
        _sync(device)
        t2 = time.perf_counter()
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        lead, aux = loss_fn._split([o.detach() for o in outputs])
        loss_fn.assign_labels(lead, aux, targets, images)
        _sync(device)
        t4 = time.perf_counter()
        if step >= args.warmup:
            for name, dt in zip(parts, (t1 - t0, t2 - t1, t4 - t3, t3 - t2)):
                parts[name].append(dt)
    wall = time.perf_counter() - wall0
    busy = _busy_cpu_seconds()
    other = float("nan")
    if busy is not None and busy0 is not None:
        other = 100 * (busy - busy0 - (time.process_time() - own0)) / (wall * (os.cpu_count() or 1))

    med = {name: statistics.median(times) for name, times in parts.items()}
    step_s = med["forward"] + med["loss"] + med["backward"]
    for name in ("forward", "loss", "backward"):
        extra = (
            f"  (label assignment alone {1000 * med['assign']:.1f} ms)" if name == "loss" else ""
        )
        print(f"  {name:<9} {1000 * med[name]:9.1f} ms/batch{extra}")
    print(f"  step      {1000 * step_s:9.1f} ms/batch   {args.batch / step_s:.1f} images/s")
    print(f"  other processes used {other:.0f}% of the CPUs while timing")


if __name__ == "__main__":
    main()
