"""Spec text -> ModelSpec: errors name the file, line, node and field."""

import pytest

from scaling_lab.spec import SpecError, load_spec, parse_spec

GOOD = """\
name: m
nc: 4
nodes:
  a: {type: conv, c: 8, k: 3}   # comment
  b: {type: conv, from: a, c: 8}
"""


def test_parses_nodes_in_order_with_lines():
    spec = parse_spec(GOOD, source="m.yaml")
    assert [n.name for n in spec.nodes] == ["a", "b"]
    assert spec.nodes[0].fields == {"c": 8, "k": 3}
    assert spec.nodes[0].inputs is None and spec.nodes[1].inputs == ("a",)
    assert spec.nodes[1].line == 5
    assert spec.nc == 4 and spec.img_size == 640


def test_malformed_yaml_names_file_and_line():
    with pytest.raises(SpecError) as err:
        parse_spec("name: m\nnodes:\n  a: {type: conv, c: 8\n", source="bad.yaml")
    msg = str(err.value)
    assert msg.startswith("bad.yaml:") and "malformed YAML" in msg


def test_duplicate_node_name_is_rejected_not_overwritten():
    text = "nodes:\n  a: {type: conv, c: 8}\n  a: {type: conv, c: 16}\n"
    with pytest.raises(SpecError, match=r"dup.yaml:3: duplicate key 'a' \(first at line 2\)"):
        parse_spec(text, source="dup.yaml")


def test_unknown_top_level_key():
    with pytest.raises(SpecError, match="field 'depth_multiple': unknown top-level key"):
        parse_spec("depth_multiple: 1\n" + GOOD, source="m.yaml")


@pytest.mark.parametrize("bad", ["0", "-3", "1.5", "ten"])
def test_nc_must_be_positive_int(bad):
    with pytest.raises(SpecError, match="field 'nc': must be a positive integer"):
        parse_spec(GOOD.replace("nc: 4", f"nc: {bad}"), source="m.yaml")


def test_node_without_type():
    with pytest.raises(SpecError, match="node 'a': field 'type': missing block type"):
        parse_spec("nodes:\n  a: {c: 8}\n  b: {type: conv, c: 8}\n", source="m.yaml")


def test_bad_node_name():
    with pytest.raises(SpecError, match="node names must be identifiers"):
        parse_spec("nodes:\n  1a: {type: conv, c: 8}\n  b: {type: conv, c: 8}\n")


def test_bad_anchors():
    with pytest.raises(SpecError, match="field 'anchors'"):
        parse_spec("anchors: [[1, 2, 3]]\n" + GOOD)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.yaml")
