"""scaling_lab.schema: typed configs from YAML, every refusal naming file, line and key path."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pytest

from scaling_lab import schema
from scaling_lab.errors import UserError
from scaling_lab.schema import (
    INTERNAL,
    FieldError,
    InvalidValueError,
    MissingKeyError,
    Partial,
    SchemaError,
    UnknownKeyError,
    WrongTypeError,
)
from scaling_lab.spec.yaml_lines import read_yaml_mapping


@dataclass(frozen=True)
class Budget:
    epochs: int
    lr: float = 0.01
    amp: bool = False
    device: str | None = None
    mode: Literal["fast", "exact"] = "fast"


@dataclass(frozen=True)
class Run:
    name: str
    sizes: tuple[int, ...] = ()
    hyp: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        if any(s % 32 for s in self.sizes):
            raise FieldError("sizes", f"must be multiples of 32, got {list(self.sizes)}")
        if self.name == "forbidden":
            raise FieldError("", "this run is forbidden")


@dataclass(frozen=True)
class Study:
    title: str
    train: Budget
    runs: tuple[Run, ...] = ()
    policy: Run | Literal["none", "default"] | None = None
    extra: Annotated[dict[str, Any], Partial(Budget, exclude=("epochs",))] = field(
        default_factory=dict
    )
    pair: tuple[int, str] | None = None
    order: int = field(default=-1, metadata=INTERNAL)


STUDY = """\
title: demo
train:
  epochs: 10
  lr: 1
runs:
  - name: a
    sizes: [32, 64]
  - name: b
    hyp: {lr0: 0.1}
extra: {lr: 0.5, mode: exact}
"""


def load(text: str, name: str = "study.yaml") -> Study:
    return schema.build(
        Study, read_yaml_mapping(textwrap.dedent(text), name, "a study"), source=name
    )


def refused(text: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        load(text)
    assert isinstance(info.value, UserError)
    return info.value


def test_a_valid_mapping_builds_the_typed_instance():
    study = load(STUDY)
    assert study.train == Budget(epochs=10, lr=1)  # an int is a float
    assert study.runs[0].sizes == (32, 64)  # YAML list -> tuple
    assert study.runs[1].hyp == {"lr0": 0.1}  # no line records left in values
    assert study.extra == {"lr": 0.5, "mode": "exact"}
    assert study.order == -1 and study.policy is None


def test_a_wrong_type_names_file_line_and_dotted_path():
    err = refused(STUDY.replace("epochs: 10", "epochs: ten"))
    assert isinstance(err, WrongTypeError)
    assert str(err) == "study.yaml:3: field 'train.epochs': must be int, got 'ten'"
    assert (err.source, err.line, err.field) == ("study.yaml", 3, "train.epochs")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("epochs: 10", "epochs: true"),
            "study.yaml:3: field 'train.epochs': must be int, got True",
        ),
        (("lr: 1", "lr: yes"), "study.yaml:4: field 'train.lr': must be float, got True"),
        (("lr: 1", "amp: 1"), "study.yaml:4: field 'train.amp': must be bool, got 1"),
        (("lr: 1", "mode: slow"), "field 'train.mode': must be one of 'fast', 'exact', got 'slow'"),
        (("lr: 1", "device: 0"), "study.yaml:4: field 'train.device': must be str or null, got 0"),
        (
            ("sizes: [32, 64]", "sizes: [32, x]"),
            "study.yaml:7: field 'runs[0].sizes[1]': must be int",
        ),
        (("sizes: [32, 64]", "sizes: 32"), "field 'runs[0].sizes': must be a list of int, got 32"),
        (("{lr0: 0.1}", "{lr0: high}"), "study.yaml:9: field 'runs[1].hyp.lr0': must be float"),
        (("{lr0: 0.1}", "[0.1]"), "field 'runs[1].hyp': must be a mapping, got [0.1]"),
        (("title: demo", "title: [demo]"), "study.yaml:1: field 'title': must be str"),
        (("mode: exact}", "mode: 3}"), "study.yaml:10: field 'extra.mode': must be one of"),
    ],
)
def test_types_follow_the_hints(edit, message):
    old, new = edit
    assert old in STUDY
    assert message in str(refused(STUDY.replace(old, new)))


def test_unknown_keys_are_refused_with_the_known_ones_and_their_line():
    err = refused(STUDY.replace("    hyp:", "    hype:"))
    assert isinstance(err, UnknownKeyError)
    assert str(err) == (
        "study.yaml:9: field 'runs[1]': unknown key 'hype' (known: name, sizes, hyp)"
    )
    assert (err.key, err.known) == ("hype", ("name", "sizes", "hyp"))
    top = refused(STUDY + "order: 3\n")  # an internal field is no key of the file
    assert str(top).startswith("study.yaml:11: unknown key 'order' (known: title, train, ")
    partial = refused(STUDY.replace("lr: 0.5", "epochs: 5"))  # excluded from the Partial
    assert "study.yaml:10: field 'extra': unknown key 'epochs' (known: lr, amp" in str(partial)


def test_missing_required_keys_name_the_mapping_that_lacks_them():
    err = refused(STUDY.replace("  epochs: 10\n", ""))
    assert isinstance(err, MissingKeyError) and err.key == "epochs"
    assert str(err) == "study.yaml:2: field 'train': required key 'epochs' missing"
    assert str(refused("train: {epochs: 1}\n")) == "study.yaml: required key 'title' missing"
    nested = refused(STUDY.replace("  - name: b\n", "  - sizes: []\n"))
    assert str(nested) == "study.yaml:8: field 'runs[1]': required key 'name' missing"


def test_check_refuses_a_field_at_its_own_line():
    err = refused(STUDY.replace("[32, 64]", "[32, 48]"))
    assert isinstance(err, InvalidValueError)
    assert str(err) == "study.yaml:7: field 'runs[0].sizes': must be multiples of 32, got [32, 48]"
    whole = refused(STUDY.replace("name: b", "name: forbidden"))
    assert str(whole) == "study.yaml:8: field 'runs[1]': this run is forbidden"


def test_a_union_reports_the_deeper_error_of_the_arm_that_fits_the_shape():
    assert load(STUDY + "policy: none\n").policy == "none"
    assert load(STUDY + "policy: {name: p}\n").policy == Run(name="p")
    deeper = refused(STUDY + "policy: {name: p, sizes: [31]}\n")
    assert "study.yaml:11: field 'policy.sizes': must be multiples of 32" in str(deeper)
    wrong = refused(STUDY + "policy: always\n")
    assert str(wrong) == (
        "study.yaml:11: field 'policy': must be a mapping (Run) or one of 'none', 'default' "
        "or null, got 'always'"
    )


def test_fixed_length_tuples_check_each_position():
    assert load(STUDY + "pair: [1, a]\n").pair == (1, "a")
    assert "field 'pair[1]': must be str, got 2" in str(refused(STUDY + "pair: [1, 2]\n"))
    assert "must be a list of 2 values" in str(refused(STUDY + "pair: [1]\n"))


def test_plain_mappings_build_too_without_lines():
    assert schema.build(Budget, {"epochs": 3}) == Budget(epochs=3)
    with pytest.raises(WrongTypeError, match=r"^field 'epochs': must be int, got 2\.5$"):
        schema.build(Budget, {"epochs": 2.5})
    with pytest.raises(WrongTypeError, match=r"^cfg.yaml: field 'b': must be a mapping \(Budget"):
        schema.build(Budget, [1], source="cfg.yaml", path="b")


def test_convert_type_ok_and_describe():
    assert schema.convert(tuple[float, ...], [1, 2.5]) == (1, 2.5)
    assert schema.convert(dict[str, int] | None, None) is None
    assert schema.type_ok(3, int) and not schema.type_ok(True, int)
    assert schema.type_ok(None, int | None) and not schema.type_ok("x", int | None)
    assert schema.describe(int | None) == "int or null"
    assert schema.describe(tuple[Literal["a", "b"], ...]) == "a list of one of 'a', 'b'"
    with pytest.raises(WrongTypeError, match="key 1 must be str"):
        schema.convert(dict[str, int], {1: 2}, path="m")


def test_line_of_follows_dotted_keys_that_hold_dots():
    data = read_yaml_mapping(
        "space:\n  elan2.depth: {type: int}\n  items:\n    - a: 1\n    - b: 2\n", "s", "x"
    )
    assert schema.line_of(data, "space.elan2.depth") == 2
    assert schema.line_of(data, "space.elan2.depth.type") == 2
    assert schema.line_of(data, "space.items[1]") == 5
    assert schema.line_of(data, "space.nothing.here") == 1
    assert schema.line_of(data, "absent") is None
