"""Seconds per design of the screen (sweep/screen.py) on the main job's space and batch:
counts only, NASWOT only, and every proxy, over the same designs, one torch thread (a
trial's CPU).

    .venv/bin/python benchmarks/screen_speed.py [--designs 24] [--experiment PATH]

Per proxy as well: each one's median seconds on the feasible designs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scaling_lab.analyze.proxies import DATA_PROXIES, LOSS_PROXIES
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.screen import draw_designs, loss_function, screen_batch, screen_designs


def per_proxy(experiment, designs: int) -> dict[str, float]:
    """Median seconds of each proxy over the feasible designs."""
    from scaling_lab.models import create_model, get_block_graph
    from scaling_lab.sweep.experiment_graphs import base_graph
    from scaling_lab.sweep.materialize import Overrides, materialize

    batch = screen_batch(experiment)
    loss_fn = loss_function(batch)
    times: dict[str, list[float]] = {n: [] for n in (*DATA_PROXIES, *LOSS_PROXIES)}
    for params in draw_designs(experiment, designs):
        graph = materialize(base_graph(experiment), Overrides.from_paths(params))
        model = create_model(get_block_graph(graph, nc=batch.nc, img_size=batch.img_size))
        for name, fn in {**DATA_PROXIES, **LOSS_PROXIES}.items():
            args = (model, batch.images) if name in DATA_PROXIES else (model, batch.images, loss_fn)
            started = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - started)
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", type=int, default=24)
    parser.add_argument("--experiment", default="experiments/elan_search.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    experiment = load_experiment(args.experiment, check_graphs=False)
    screen_designs(experiment, 2, reports=None, progress=False)  # imports, warm-up
    for label, proxies in (("counts only", False), ("naswot", ["naswot"]), ("all", True)):
        frame = screen_designs(experiment, args.designs, reports=None, proxies=proxies)
        ok = frame[frame["constraint_ok"]]
        print(
            f"{label}: {frame['screen_s'].mean():.3f} s per design over {len(frame)} "
            f"({len(ok)} feasible: {ok['screen_s'].mean():.3f} s each)"
        )
    medians = per_proxy(experiment, min(args.designs, 8))
    print("median s per proxy: " + ", ".join(f"{n} {s:.2f}" for n, s in medians.items()))


if __name__ == "__main__":
    main()
