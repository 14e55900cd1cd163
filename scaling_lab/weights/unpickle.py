"""Read a checkpoint of the public reference implementation without running any of its code.

The reference saves whole pickled models (``torch.save({'model': Model, 'ema': Model, ...})``);
a plain unpickle would import and run its classes (and whatever else the file names). Here
``torch.load`` runs with a restricted pickle module whose ``find_class``

- gives the reference's own classes (modules ``models.*``, ``utils.*``), torch's module
  classes (``torch.nn.modules.*``) and numpy's array reconstruction an inert stand-in
  (``ReferenceObject``) that only records what the pickle hands it;
- gives the few functions that tensors and plain containers need (``_rebuild_tensor_v2``,
  ``_rebuild_parameter``, ``OrderedDict``, ``set``, latin-1 bytes) as themselves;
- refuses every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``,
  ``functools.partial``, ...) before it is imported, so nothing from the file ever runs.

The recorded module tree is then walked into the reference's state dict (``_parameters``,
``_buffers``, ``_modules``, as ``nn.Module.state_dict`` does) and its ``yaml`` (the model
config the reference keeps on its ``Model``).
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from scaling_lab.weights.errors import ReferenceCheckpointError

# modules whose classes become inert stand-ins (the reference's, torch.nn's)
_INERT_PREFIXES = ("models.", "utils.", "torch.nn.modules.")
_INERT_MODULES = ("models", "utils")
# numpy arrays (the reference stores best_fitness as one), option namespaces, paths:
# recorded, never rebuilt
_INERT_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("argparse", "Namespace"),  # training options some checkpoints keep
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
}
_MAX_PICKLE_NAME = 200
_MAX_MODULES = 100_000  # the largest reference model has about 2,000


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the whitelist (raised before anything is imported)."""

    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"[:_MAX_PICKLE_NAME]
        super().__init__(f"refused global {self.qualname}")


class ReferenceObject:
    """Inert stand-in for an object of a class the checkpoint names: it runs nothing and
    records the constructor arguments and the state the pickle gives it."""

    ref_class: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> ReferenceObject:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_ref_args", args)
        object.__setattr__(obj, "_ref_state", None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_ref_state", state)

    def __repr__(self) -> str:
        return f"<inert {self.ref_class}>"


_INERT_CLASSES: dict[tuple[str, str], type[ReferenceObject]] = {}


def _inert_class(module: str, name: str) -> type[ReferenceObject]:
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = types.new_class(
            "Inert_" + "".join(ch if ch.isalnum() else "_" for ch in name),
            (ReferenceObject,),
            exec_body=lambda ns: ns.update(ref_class=f"{module}.{name}", __module__=__name__),
        )
    return _INERT_CLASSES[key]


def ref_class(obj: Any) -> str | None:
    """``models.common.Conv`` for a stand-in of that class, None for anything else."""
    return obj.ref_class if isinstance(obj, ReferenceObject) else None


def ref_state(obj: ReferenceObject) -> Any:
    """The state the pickle gave a stand-in (an ``nn.Module``'s ``__dict__``)."""
    return object.__getattribute__(obj, "_ref_state")


def _latin1(text: Any, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles use ``_codecs.encode`` for: bytes written as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs", f"encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    """torch's tensor rebuild with the pickled backward hooks left out."""
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, OrderedDict(), metadata
    )


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    """torch's parameter rebuild with the pickled hooks and attribute state left out."""
    return torch._utils._rebuild_parameter(data, requires_grad, OrderedDict())


_TENSOR_REBUILDERS = {
    "_rebuild_tensor": torch._utils._rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


def _allowed(module: str, name: str) -> Any:
    """The object a whitelisted global stands for; None when it is not whitelisted."""
    if module == "builtins" and name in ("set", "frozenset"):
        return set if name == "set" else frozenset
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if (module, name) == ("_codecs", "encode"):
        return _latin1
    if module == "torch._utils" and name in _TENSOR_REBUILDERS:
        return _TENSOR_REBUILDERS[name]
    if module == "torch":
        if name in ("Size", "device"):
            return getattr(torch, name)
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` maps globals as the module docstring says."""

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(str(module), str(name))
        # protocol-2 pickles spell some modules the Python 2 way (__builtin__, commands)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        inert = module in _INERT_MODULES or module.startswith(_INERT_PREFIXES)
        if (inert or (module, name) in _INERT_GLOBALS) and name.isidentifier():
            return _inert_class(module, name)
        value = _allowed(module, name)
        if value is None:
            raise RefusedGlobal(module, name)
        return value


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# what torch.load calls on its ``pickle_module``
RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__=__name__, Unpickler=RestrictedUnpickler, load=_restricted_load
)


# ----------------------------------------------------------------------------- the model


@dataclass
class ReferenceWeights:
    """What a reference checkpoint holds for one model: its state dict (reference names,
    ``model.{layer}.…``), its layer-list config (None for a bare state dict) and, where the
    file pickled the module tree, each module's class and plain attributes by prefix."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any] | None
    source: str
    entry: str  # which entry of the checkpoint: "model", "ema" or "" (the file itself)
    modules: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    epoch: int | None = None


def _plain_attrs(state: dict[str, Any]) -> dict[str, Any]:
    plain = (int, float, str, bool, type(None))
    return {
        k: v
        for k, v in state.items()
        if isinstance(k, str) and not k.startswith("_") and isinstance(v, plain)
    }


def _walk(
    obj: ReferenceObject,
    prefix: str,
    state_out: dict[str, torch.Tensor],
    modules: dict[str, tuple[str, dict[str, Any]]],
    fail: Any,
    depth: int = 0,
) -> None:
    """``nn.Module.state_dict`` over the recorded tree: parameters, persistent buffers, then
    children, each under its prefix."""
    if depth > 64:
        raise fail("module tree nested deeper than 64 levels")
    if len(modules) >= _MAX_MODULES:
        raise fail(f"module tree of more than {_MAX_MODULES} modules")
    state = ref_state(obj)
    if not isinstance(state, dict) or not isinstance(state.get("_modules"), Mapping):
        raise fail(f"'{prefix.rstrip('.') or 'model'}' ({obj.ref_class}) is not a torch module")
    modules[prefix.rstrip(".")] = (obj.ref_class, _plain_attrs(state))
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, Mapping):
            raise fail(f"'{prefix}{group}' is not a mapping")
        for name, tensor in entries.items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise fail(f"'{prefix}{name}' is {type(tensor).__name__}, not a tensor")
            state_out[f"{prefix}{name}"] = tensor.detach()
    for name, child in state["_modules"].items():
        if child is None:
            continue
        if not isinstance(child, ReferenceObject):
            raise fail(f"'{prefix}{name}' is {type(child).__name__}, not a module")
        _walk(child, f"{prefix}{name}.", state_out, modules, fail, depth + 1)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _refused_in(exc: BaseException) -> RefusedGlobal | None:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 16:
        if isinstance(current, RefusedGlobal):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def load_restricted(path: str | Path) -> Any:
    """``torch.load`` of ``path`` through the restricted unpickler (nothing in it runs)."""
    path = Path(path)
    if not os.path.isfile(path):  # os.path: False, not OSError, for a name too long
        raise ReferenceCheckpointError("no such file", source=str(path))
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ReferenceCheckpointError(
                f"unreadable zip archive ({exc})", source=str(path)
            ) from None
        if any(n.endswith("constants.pkl") for n in names):
            raise ReferenceCheckpointError(
                "a TorchScript archive, not a checkpoint of the reference implementation",
                source=str(path),
            )
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE
        )
    except Exception as exc:  # any failure to parse a foreign file is the user's
        refused = _refused_in(exc)
        if refused is not None:
            raise ReferenceCheckpointError(
                f"refused: the pickle names the global '{refused.qualname}', which no weights "
                "file needs (nothing from the file was run)",
                source=str(path),
            ) from None
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {text}"[:200]
        raise ReferenceCheckpointError(
            f"cannot be read as a checkpoint ({reason})", source=str(path)
        ) from None


def read_reference_checkpoint(path: str | Path, *, ema: bool = False) -> ReferenceWeights:
    """The model (``ema=True``: the EMA model) of a reference checkpoint, read safely.

    Accepts the reference's training checkpoints (``{'model': Model, 'ema': Model, ...}``), a
    bare pickled ``Model``, and state dicts (then without a config)."""
    source = str(path)
    obj = load_restricted(path)
    entry = "ema" if ema else "model"

    def fail(message: str) -> ReferenceCheckpointError:
        return ReferenceCheckpointError(message, source=source)

    epoch = None
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        if entry not in obj:
            keys = ", ".join(sorted(str(k) for k in obj)[:8])
            raise fail(f"no '{entry}' entry (entries: {keys or 'none'})")
        epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
        model = obj[entry]
        if model is None:
            hint = (
                " (a stripped checkpoint keeps the EMA as its 'model'; leave out --ema)"
                if ema
                else ""
            )
            raise fail(f"its '{entry}' entry is empty{hint}")
    elif ema:
        raise fail("holds a single model, not a training checkpoint with an EMA")
    else:
        model, entry = obj, ""
    if _is_state_dict(model):
        state = {str(k): v.detach() for k, v in model.items()}
        return ReferenceWeights(state, None, source, entry, epoch=epoch)
    if not isinstance(model, ReferenceObject):
        raise fail(f"its model is {type(model).__name__}, not a pickled model or a state dict")
    state: dict[str, torch.Tensor] = {}
    modules: dict[str, tuple[str, dict[str, Any]]] = {}
    _walk(model, "", state, modules, fail)
    config = ref_state(model).get("yaml")
    if config is not None and not isinstance(config, dict):
        raise fail(f"its model config ('yaml') is {type(config).__name__}, not a mapping")
    return ReferenceWeights(state, config, source, entry, modules, epoch)
