"""The graphs of an experiment's rows: a row's BlockGraph, the proxy a trial trains, and the
up-front check that every row and every searched value builds and lowers."""

from __future__ import annotations

from scaling_lab.errors import UserError
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_checks import located
from scaling_lab.sweep.experiment_format import Experiment, Variant
from scaling_lab.sweep.materialize import Overrides, matching_nodes, materialize


def base_graph(experiment: Experiment, model: str | None = None, field: str = "base"):
    """The BlockGraph of ``model`` (default: the base). What is wrong with a spec file it
    names (a folder, /etc/passwd) is said at the experiment's ``field`` that names it."""
    from scaling_lab.models import get_block_graph

    try:
        return get_block_graph(model or experiment.base)
    except SpecError as exc:
        if exc.source not in (None, experiment.path) or exc.field is None:  # or unknown model
            raise SpecError(str(exc), source=experiment.path, field=field) from None
        raise exc.located(experiment.path) from None


def variant_graph(experiment: Experiment, variant: Variant, changes: Overrides | None = None):
    """The BlockGraph a variant's trial profiles and trains: its base model with ``changes``
    (default: the variant's own; a search trial adds its sampled values)."""
    field = "base" if variant.model is None else f"variants[{variant.order}].model"
    graph = base_graph(experiment, variant.model, field)
    changes = changes if changes is not None else variant.changes
    return materialize(graph, changes, source=experiment.path)


def training_graph(experiment: Experiment, graph, budget: str | None = None):
    """The graph a trial trains: ``graph`` itself, or its proxy (depth, then width). The
    proxy stands in at the experiment's own budget only: a named budget (``--budget paper``,
    the recipe for a GPU cluster) trains the full-size model."""
    proxy = experiment.proxy
    if proxy is None or budget is not None:
        return graph
    from scaling_lab.transforms.scale import scale

    if proxy.depth != 1:
        graph = scale(graph, depth=proxy.depth, mode="depth")
    if proxy.width != 1:
        graph = scale(graph, width=proxy.width, mode="width", heads=proxy.heads)
    return graph


def _lowered(experiment: Experiment, graph, where: str, source: str, line: int | None) -> None:
    from scaling_lab.models import get_layer_graph, model_ref

    try:
        get_layer_graph(model_ref(graph, form=experiment.form))
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}", source=source, line=line) from None


def check_graphs_of(experiment: Experiment) -> None:
    """Build and lower every variant; for a search, try each path at its extreme values."""
    for variant in experiment.variants:
        try:
            graph = variant_graph(experiment, variant)
        except UserError as exc:  # the base's line is load_experiment's to add
            line = None if exc.field == "base" else variant.line
            raise located(exc, experiment.path, line) from None
        _lowered(experiment, graph, f"variant '{variant.label}'", experiment.path, variant.line)
    if experiment.proxy is not None:
        _check_proxy(experiment)
    if experiment.search is None:
        return
    _check_baselines(experiment)
    search = experiment.search
    base = base_graph(experiment)
    for path, dist in search.space.items():
        line = search.lines.get(path)
        changes = Overrides.from_paths({path: dist.corners()[0]})
        if changes.train:
            continue  # check_training's
        try:
            if changes.fields:
                matching_nodes(base, path, source=search.source)
            for value in dist.corners():
                graph = materialize(base, Overrides.from_paths({path: value}), source=search.source)
                where = f"search parameter '{path}' = {value!r}"
                _lowered(experiment, graph, where, search.source, line)
        except UserError as exc:
            raise located(exc, search.source, line) from None


def _check_baselines(experiment: Experiment) -> None:
    """Each search baseline names a model that builds, lowers and (with a proxy) scales."""
    for i, model in enumerate(experiment.baselines or ()):
        field = f"baselines[{i}]"
        graph = base_graph(experiment, model, field)
        try:
            _lowered(experiment, training_graph(experiment, graph), model, experiment.path, None)
        except SpecError as exc:
            raise SpecError(str(exc), source=experiment.path, field=field) from None


def _layers(graph) -> tuple:
    """What a model trains, layer by layer (ops compare by value), for telling rows apart."""
    from scaling_lab.models import get_layer_graph, model_ref

    return tuple((x.name, x.op, x.inputs) for x in get_layer_graph(model_ref(graph)).layers)


def _check_proxy(experiment: Experiment) -> None:
    """Every model's proxy lowers, and rows that train different models still do (a depth
    factor can remove the very convs a row's RepConv placement names)."""
    assert experiment.proxy is not None
    what = f"proxy ({experiment.proxy.describe()})"
    rows = experiment.variants or (Variant(label="base", order=0),)
    full, small = [], []
    for variant in rows:
        graph = variant_graph(experiment, variant)
        try:
            proxy = training_graph(experiment, graph)
            small.append(_layers(proxy))
        except SpecError as exc:
            raise SpecError(
                f"{what}: variant '{variant.label}': {exc}",
                source=experiment.path,
                field="proxy",
                line=variant.line,
            ) from None
        full.append(_layers(graph))
    for j, later in enumerate(rows):
        for i in range(j):
            if full[i] != full[j] and small[i] == small[j]:
                raise SpecError(
                    f"{what}: variants '{rows[i].label}' and '{later.label}' train different "
                    "models at full size but the same proxy (a smaller depth factor removes "
                    "what tells them apart)",
                    source=experiment.path,
                    field="proxy",
                    line=later.line,
                )
