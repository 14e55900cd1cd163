"""Ray for a sweep: the embedded instance (loopback only) or a cluster, its resources, and how
much of Ray's own output a person sees.

Ray logs its start, Tune's bookkeeping and its warnings at INFO/WARNING, and Tune prints a
status table every few seconds; ``lab sweep`` prints its own progress (``progress.py``)
instead, and lets Ray's output through only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterator

from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_format import Experiment


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local" or another form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SpecError(
            f"cannot connect to the Ray cluster at '{address}': {exc.strerror or exc} (is it "
            "running? start one with `ray start --head`)",
            field="address",
        ) from None


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


def _loopback_only() -> None:
    """The embedded Ray listens on 127.0.0.1 only: its node address is the loopback one (Ray's
    single-machine mode), for this process and the Ray processes it starts."""
    os.environ[LOOPBACK_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read when Ray resolves the node address


# the Ray connections init_ray made (by the driver's worker id): the ones a sweep may stop
_STARTED_HERE: set[str] = set()


def init_ray(address: str | None, num_cpus: int | None = None, verbose: int = 1) -> None:
    """Start the embedded Ray (or connect to ``address``). Ray's own log lines and the trial
    workers' output reach this terminal only with ``verbose`` >= 2."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new output prints at verbose 0
    if ray.is_initialized():
        return
    quiet = {
        "log_to_driver": verbose >= 2,
        "logging_level": logging.INFO if verbose >= 2 else logging.ERROR,
    }
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # ConnectionError, AuthenticationError, bad address, ...
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise SpecError(
                f"cannot connect to the Ray cluster at '{address}': {type(exc).__name__}: "
                f"{reason[:300]} (is it running? with token authentication, set "
                "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)",
                field="address",
            ) from None
        if verbose >= 1:  # Ray's own line is held back below --verbose
            print(f"Connected to Ray cluster at {address}", file=sys.stderr)
    else:
        _loopback_only()
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    _STARTED_HERE.add(ray.get_runtime_context().get_worker_id())


def stop_ray_in_background() -> threading.Thread | None:
    """Stop the Ray session ``init_ray`` started or joined (never one its caller had
    started) in a thread, and return it to join. Ray's stop mostly waits for its processes to
    exit (~1.4 s here), which a sweep's report can be written beside instead of after; left
    to the process's exit, it would run last."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    if ray.get_runtime_context().get_worker_id() not in _STARTED_HERE:
        return None
    _STARTED_HERE.clear()
    thread = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    thread.start()
    return thread


def check_gpu_request(experiment: Experiment) -> None:
    """Ray shares a GPU between trials asking for fractions of one (0.25, 0.3: four or three
    to a GPU) and gives whole GPUs; a request above 1 that is not whole (1.5) packs onto no
    GPU and the trial would wait forever."""
    gpu = experiment.resources.gpu
    if gpu > 1 and not float(gpu).is_integer():
        raise SpecError(
            f"a trial asks for {gpu:g} GPUs, which Ray cannot pack: ask for a fraction of one "
            "GPU (below 1) or a whole number",
            source=experiment.path,
            field="resources.gpu",
        )


def check_resources(experiment: Experiment, num_cpus: int | None) -> None:
    """A trial asking the embedded Ray for more than this machine has would wait forever."""
    check_gpu_request(experiment)
    cpus = num_cpus or os.cpu_count() or 1
    want = experiment.resources
    if want.cpu > cpus:
        raise SpecError(
            f"a trial asks for {want.cpu:g} CPUs, the embedded Ray has {cpus}",
            source=experiment.path,
            field="resources.cpu",
        )
    if want.gpu > 0:
        from scaling_lab.device import gpu_count

        gpus = gpu_count()
        if want.gpu > gpus:
            raise SpecError(
                f"a trial asks for {want.gpu:g} GPUs, this machine has {gpus}",
                source=experiment.path,
                field="resources.gpu",
            )


def trial_slots(experiment: Experiment, num_cpus: int | None, address: str | None) -> int:
    """How many trials run at once: ``max_concurrent``, else as many as the resources allow
    (then the batches of a search depend on the machine: set ``max_concurrent`` to repeat a
    search elsewhere)."""
    if experiment.max_concurrent is not None:
        return experiment.max_concurrent
    import ray

    have = ray.cluster_resources() if address else {"CPU": num_cpus or os.cpu_count() or 1}
    if not address and experiment.resources.gpu > 0:
        from scaling_lab.device import gpu_count

        have["GPU"] = gpu_count()
    slots = []
    for name, want in (("CPU", experiment.resources.cpu), ("GPU", experiment.resources.gpu)):
        if want > 0:
            slots.append(math.floor(float(have.get(name, 0)) / want + 1e-9))
    return max(1, min(slots))


@contextlib.contextmanager
def ray_output(verbose: int) -> Iterator[None]:
    """Below ``verbose`` 2: Ray's and Optuna's log records under ERROR and their warnings
    (experimental features, deprecations) held back; restored afterwards."""
    if verbose >= 2:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(ray|optuna)(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(ExperimentalWarning|experimental)")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def probe_node(store_root: str, data: list[tuple[str, str]]) -> tuple[str, str] | None:
    """Run on one node of a cluster (a Ray task): the sweep's storage is writable there and
    every dataset is there. The first problem as (field, message), or None."""
    import uuid
    from pathlib import Path

    from scaling_lab.data.sources import check_data_ref
    from scaling_lab.errors import UserError

    probe = Path(store_root) / f".probe-{uuid.uuid4().hex}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("probe\n")
        probe.unlink()
    except OSError as exc:
        return "storage", f"cannot write the sweep storage {store_root}: {exc.strerror or exc}"
    for where, ref in data:
        try:
            check_data_ref(ref)
        except UserError as exc:
            return f"{where}.data", f"dataset '{ref}' is not there: {exc.reason}"
    return None


def check_cluster(
    experiment: Experiment,
    address: str,
    store_root: str,
    data: list[tuple[str, str]],
    verbose: int = 1,
    timeout_s: float = 120.0,
) -> None:
    """Before any trial of a sweep on a cluster: some node has the CPUs and GPUs a trial
    asks for, and every node can write the sweep's storage (trials of any node, and their
    retries on another, write their rows and checkpoints there) and has the datasets.
    ``data``: (where, dataset) pairs, relative paths resolved against this folder."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check_gpu_request(experiment)
    init_ray(address, None, verbose)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    want = experiment.resources

    def has(node: dict, name: str) -> float:
        return float(node.get("Resources", {}).get(name, 0.0))

    if not any(has(n, "CPU") >= want.cpu and has(n, "GPU") >= want.gpu for n in nodes):
        most = max(nodes, key=lambda n: (has(n, "GPU"), has(n, "CPU")), default={})
        field = (
            "resources.gpu"
            if want.gpu > max((has(n, "GPU") for n in nodes), default=0)
            else "resources.cpu"
        )
        raise SpecError(
            f"a trial asks for {want.cpu:g} CPUs and {want.gpu:g} GPUs, more than any node of "
            f"the cluster at '{address}' has (the largest: {has(most, 'CPU'):g} CPUs, "
            f"{has(most, 'GPU'):g} GPUs)",
            source=experiment.path,
            field=field,
        )
    from pathlib import Path

    data = [(w, ref if ref.startswith("synth") else str(Path(ref).resolve())) for w, ref in data]
    probe = ray.remote(num_cpus=0)(probe_node)
    asks = {
        node["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(store_root, data)
        for node in nodes
    }
    for node_id, ref in asks.items():
        where = f"node {node_id[:8]}"
        try:
            problem = ray.get(ref, timeout=timeout_s)
        except Exception as exc:  # GetTimeoutError, a node that died meanwhile
            raise SpecError(
                f"{where} of the cluster at '{address}' did not answer the storage check: "
                f"{type(exc).__name__}",
                field="address",
            ) from None
        if problem is not None:
            field, message = problem
            source = experiment.path if field != "storage" else None
            raise SpecError(f"{where}: {message}", source=source, field=field)
