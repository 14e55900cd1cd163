"""Hostile files and names tried against the CLI (issue 25, item 9): each is refused with one
line naming the file, line and field, never a traceback and never a long echo of the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling_lab.errors import UserError
from tests.helpers.fuzz import assert_one_line, lab
from tests.helpers.specs import TINY_SPEC

ROOT = Path(__file__).resolve().parents[2]
HUGE = "1" + "0" * 5000  # past Python's 4300-digit limit on int <-> str conversion


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("c: 16,", f"c: {HUGE},", ":8: field 'nodes.stem.c'"),
        ("c: 16,", f"c: -{HUGE},", ":8: field 'nodes.stem.c'"),
        ("c: 16,", f"c: 0x{'f' * 5000},", ":8: field 'nodes.stem.c'"),  # parses, cannot print
        ("c: 16,", f"c: !!int '{HUGE}',", ":8: field 'nodes.stem.c'"),
        ("nc: 3", f"nc: {HUGE}", ":2: field 'nc'"),
        ("img_size: 64", f"img_size: {HUGE}", ":3: field 'img_size'"),
        ("[10, 13,", f"[{HUGE}, 13,", ":5: field 'anchors[0][0]'"),
    ],
)
def test_a_huge_integer_in_a_spec_names_file_line_and_field(tmp_path, old, new, where):
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.replace(old, new))
    result = lab("profile", str(spec))
    assert_one_line(result, may_succeed=False)
    assert f"spec.yaml{where}: integer too long: " in result.stderr, result.stderr
    assert "(limit 100, MAX_INT_CHARS)" in result.stderr


def test_a_huge_integer_in_an_experiment_or_search_space(tmp_path):
    exp = tmp_path / "exp.yaml"
    body = "base: yolov7-tiny\nmetrics: [params]\nsearch:\n  space: space.yaml\n"
    (tmp_path / "space.yaml").write_text("params:\n  elan1.depth: {type: int, low: 1, high: 4}\n")
    exp.write_text(body + f"  trials: {HUGE}\n  objectives: {{params: min}}\n")
    result = lab("sweep", str(exp), "--storage", str(tmp_path / "runs"))
    assert_one_line(result, may_succeed=False)
    assert "exp.yaml:5: field 'search.trials': integer too long" in result.stderr

    (tmp_path / "space.yaml").write_text(f"params:\n  d: {{type: int, low: 1, high: {HUGE}}}\n")
    exp.write_text(body + "  trials: 2\n  objectives: {params: min}\n")
    result = lab("sweep", str(exp), "--storage", str(tmp_path / "runs"))
    assert_one_line(result, may_succeed=False)
    assert "space.yaml:2: field 'params.d.high': integer too long" in result.stderr


def test_a_huge_integer_in_a_layer_list_config(tmp_path):
    config = tmp_path / "v7.yaml"
    text = (ROOT / "tests" / "fixtures" / "layer_list" / "v7_style.yaml").read_text()
    config.write_text(text.replace("nc: ", f"nc: {HUGE}  # ", 1))
    result = lab("import", str(config), "--out", str(tmp_path / "out.yaml"))
    assert_one_line(result, may_succeed=False)
    assert "v7.yaml:" in result.stderr and "field 'nc': integer too long" in result.stderr


def test_a_huge_integer_in_a_hyp_file(tmp_path):
    from scaling_lab.data.errors import DataError
    from scaling_lab.data.hyp import read_hyp_file

    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(f"lr0: 0.01\nlrf: {HUGE}\n")
    with pytest.raises(DataError, match=r"hyp\.yaml:2: field 'lrf': integer too long"):
        read_hyp_file(hyp)
    # the hyp reader now bounds aliases like every other YAML reader
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdef", "bcdefg")
    )
    hyp.write_text(bomb)
    with pytest.raises(DataError, match="once aliases are expanded"):
        read_hyp_file(hyp)


def test_a_huge_integer_in_a_coco_file_or_a_latency_table(tmp_path):
    from scaling_lab.data.sources import parse_coco

    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [\n{"id": ' + HUGE + '}], "annotations": [], "categories": []}')
    with pytest.raises(UserError, match=r"ann\.json:2: integer too long: 5001 characters"):
        parse_coco(ann, tmp_path, check_files=False)

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"format": "scaling_lab.latency_table"})[:-1] + f', "v": {HUGE}}}')
    result = lab("latency-table", "show", str(table))
    assert_one_line(result, may_succeed=False)
    assert "table.json:1: integer too long" in result.stderr
    table.write_text("[" * 100_000 + "]" * 100_000)
    result = lab("latency-table", "show", str(table))
    assert_one_line(result, may_succeed=False)
    assert "JSON nested too deeply" in result.stderr


def test_an_error_shows_a_huge_integer_by_its_size():
    from scaling_lab.errors import shown

    assert shown(10**5000) == "an integer of about 5001 digits"
    assert shown([10**5000]) == "a list holding an integer too long to print"
    assert shown("x" * 200).endswith("...") and len(shown("x" * 200)) == 80
    assert shown(12) == "12"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("passwd", "passwd: a search space must be a YAML mapping"),
        ("folder", "folder: cannot read search space file: a folder"),
        ("notes.yaml", "notes.yaml:1: unknown key 'title' (known: params"),
        ("binary", "binary:1: not UTF-8 text"),
        ("a" * 5000, "no such search space file: 'aaaa"),  # too long a name for the system
    ],
)
def test_a_search_space_that_is_not_one_names_the_experiment_line_too(tmp_path, space, message):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.yaml").write_text("title: not a space\n")
    (tmp_path / "binary").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "base: yolov7-tiny\nmetrics: [params]\nsearch:\n"
        f"  space: {space}\n  trials: 2\n  objectives: {{params: min}}\n"
    )
    result = lab("sweep", str(exp), "--storage", str(tmp_path / "runs"))
    assert_one_line(result, may_succeed=False)
    assert "exp.yaml:4: field 'search.space': " in result.stderr, result.stderr
    assert message in result.stderr
    assert len(result.stderr) < 300


@pytest.mark.parametrize(
    "name", ["../../../../../../etc/x", "../" * 1000 + "etc/x", "a/" * 2000, "a" * 5000]
)
def test_a_name_made_of_path_segments_is_an_unknown_model(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    for argv in (["profile", name], ["train", "--model", name, "--data", "synth"]):
        result = lab(*argv)
        assert_one_line(result, may_succeed=False)
        assert ": error: unknown model '" in result.stderr, result.stderr[:300]
        assert "(known: yolo" in result.stderr or "(known: ppyoloe" in result.stderr
        assert len(result.stderr) < 1000  # the name shortened, not echoed in full
    assert not (tmp_path / "runs").exists()


def test_an_existing_spec_file_is_still_a_path_without_a_yaml_suffix(tmp_path):
    (tmp_path / "my_model").write_text(TINY_SPEC)
    result = lab("profile", str(tmp_path / "my_model"))
    assert result.status == 0 and "tiny-test" in result.stdout


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("a" * 5000, "bytes is too long for a file (limit 255)"),
        ("a/" * 3000, "path too long for the file system"),
        ("missing/" + "a" * 300, "bytes is too long for a file"),
    ],
)
def test_an_output_path_too_long_for_the_system_is_refused_up_front(tmp_path, out, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC)
    for argv in (
        ["data", "synth", "--out", out],
        ["profile", "--zoo", "--out", out],
        ["import", str(spec), "--out", out + ".yaml"],
        ["train", "--model", str(spec), "--data", "synth", "--out", out],
    ):
        result = lab(*argv)
        assert_one_line(result, may_succeed=False)
        assert "field 'out': " in result.stderr and message in result.stderr, result.stderr[:300]
        assert len(result.stderr) < 300


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:200], "Truncated File Read"),  # inside the header
        (lambda data: b"", "cannot identify image file"),
        (lambda data: b"<html>not found</html>", "cannot identify image file"),
    ],
)
def test_a_damaged_image_is_the_only_output_of_a_training_run(
    tmp_path, monkeypatch, damage, message
):
    monkeypatch.chdir(tmp_path)
    assert lab("data", "synth", "--out", "ds", "--images", "8", "--size", "64").status == 0
    image = sorted((tmp_path / "ds" / "images" / "train").glob("*.jpg"))[2]
    image.write_bytes(damage(image.read_bytes()))
    result = lab(
        "train", "--model", "yolov7-tiny", "--data", "ds", "--img", "64", "--epochs", "1",
        "--batch", "2", "--device", "cpu", "--out", "run",
    )  # fmt: skip
    assert_one_line(result, may_succeed=False)  # no autoanchor line before it
    assert f"{image.name}: cannot read image: " in result.stderr
    assert message in result.stderr and result.stdout == ""
    assert not (tmp_path / "run").exists()


def test_an_image_cut_short_is_found_without_decoding_whole_ones(tmp_path):
    from PIL import Image

    from scaling_lab.data.errors import DataError
    from scaling_lab.data.sources import check_image_file

    pixels = Image.effect_noise((40, 30), 60).convert("RGB")  # a header, then data to cut
    for name in ("a.jpg", "a.png"):
        pixels.save(tmp_path / name)
        whole = (tmp_path / name).read_bytes()
        check_image_file(tmp_path / name)
        (tmp_path / name).write_bytes(whole + b"trailing bytes after the image")
        check_image_file(tmp_path / name)  # still decodes: kept
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        with pytest.raises(DataError, match=rf"{name}: cannot read image: .*cut short"):
            check_image_file(tmp_path / name)
    pixels.save(tmp_path / "a.png")
    assert check_image_file(tmp_path / "a.png", (40, 30)) == (40, 30)
    with pytest.raises(DataError, match=r"a\.png: image is 40x30 but the annotations say 41x30"):
        check_image_file(tmp_path / "a.png", (41, 30))
    pixels.save(tmp_path / "other.bmp")  # not JPEG or PNG: a cut decoded when used
    whole = (tmp_path / "other.bmp").read_bytes()
    (tmp_path / "other.bmp").write_bytes(whole[:100])
    check_image_file(tmp_path / "other.bmp")
    for text in (b"", b"hello"):
        (tmp_path / "text.jpg").write_bytes(text)
        with pytest.raises(DataError, match=r"text\.jpg: cannot read image: cannot identify"):
            check_image_file(tmp_path / "text.jpg")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr0", "-1", "must be at least 0, got -1"),  # torch's ValueError traceback before
        ("momentum", "-5", "must be at least 0 and at most 0.999, got -5"),
        ("momentum", "5", "must be at least 0 and at most 0.999, got 5"),  # trained on, diverging
        ("mosaic", "2", "must be at least 0 and at most 1, got 2"),  # not a probability
        ("anchor_t", "0.5", "must be at least 1"),  # matches no target: trains nothing
        ("loss_ota", "0.5", "must be 0 or 1"),
    ],
)
def test_a_hyper_parameter_out_of_its_range_is_refused(tmp_path, monkeypatch, key, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hyp.yaml").write_text(f"{key}: {value}\n")
    data = "synth:images=8,size=64"  # short, should a value be accepted after all
    base = ["train", "--model", "yolov7-tiny", "--data", data, "--epochs", "1", "--img", "64"]
    base += ["--batch", "2", "--device", "cpu"]
    for extra, where in [
        (["--hyp", f"{key}={value}"], f"field '--hyp': {key}: "),
        (["--hyp-file", "hyp.yaml"], f"hyp.yaml: field '{key}': "),
    ]:
        result = lab(*base, *extra)
        assert_one_line(result, may_succeed=False)
        assert where + message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_recipes_keep_their_hyper_parameters_in_range():
    from scaling_lab.data.hyp import HYP_RANGES, default_hyp, hyp_problem

    reference = json.loads((ROOT / "tests" / "fixtures" / "reference_hyp.json").read_text())
    for size in ("tiny", "p5", "p6"):
        assert set(default_hyp(size)) == set(HYP_RANGES)
        for hyp in (default_hyp(size), reference["files"][size]):
            assert all(hyp_problem(k, v) is None for k, v in hyp.items()), (size, hyp)


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("base: passwd\nvariants: [a]\n", ":1: field 'base': ", "passwd: a spec"),
        ("base: folder\nvariants: [a]\n", ":1: field 'base': ", "folder: cannot read spec file"),
        ("base: ../../../x\nvariants: [a]\n", ":1: field 'base': ", "unknown model '../../../x'"),
        (
            "base: yolov7-tiny\nvariants:\n  - {label: a, model: passwd.yaml}\n",
            ":3: field 'variants[0].model': ",
            "passwd.yaml: a spec",
        ),
    ],
)
def test_a_model_file_an_experiment_names_is_refused_at_that_line(tmp_path, body, where, message):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "passwd.yaml").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "folder").mkdir()
    exp = tmp_path / "exp.yaml"
    for name in ("passwd", "folder"):
        body = body.replace(name, str(tmp_path / name))
    exp.write_text(body)
    result = lab("sweep", str(exp), "--storage", str(tmp_path / "runs"))
    assert_one_line(result, may_succeed=False)
    assert f"exp.yaml{where}" in result.stderr and message in result.stderr, result.stderr


def test_a_coco_file_name_too_long_for_the_system_is_a_missing_image(tmp_path):
    from scaling_lab.data.errors import DataError
    from scaling_lab.data.sources import parse_coco

    ann = tmp_path / "ann.json"
    entry = {"id": 1, "file_name": "a" * 5000, "width": 8, "height": 8}
    ann.write_text(json.dumps({"images": [entry], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(DataError, match=r"1 image file\(s\) listed here are missing"):
        parse_coco(ann, tmp_path)  # an OSError (file name too long) before


def test_a_huge_integer_from_python_is_shown_by_its_size():
    import dataclasses

    from scaling_lab import schema
    from scaling_lab.models import get_layer_graph
    from scaling_lab.spec import SpecError

    for settings, field in [({"nc": 10**5000}, "nc"), ({"img_size": -(10**5000)}, "img_size")]:
        with pytest.raises(SpecError, match=rf"field '{field}': .*got (a negative|an) integer of"):
            get_layer_graph("yolov7-tiny", **settings)

    @dataclasses.dataclass
    class Named:
        name: str

    with pytest.raises(UserError, match="must be str, got an integer of about 5001 digits"):
        schema.build(Named, {"name": 10**5000})


def test_a_spec_name_with_control_characters_is_refused(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC.replace("name: tiny-test", 'name: "\\e[31mred\\e[0m"'))
    result = lab("profile", str(spec))  # it printed the escape sequence to the terminal
    assert_one_line(result, may_succeed=False)
    assert "spec.yaml:1: field 'name': must be printable text, got '\\x1b[31mred" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--resume", "a" * 5000],
        ["eval", "--weights", "a" * 5000, "--data", "synth"],
        ["convert-weights", "a" * 5000, "--model", "yolov7", "--out", "x.pt"],
        ["train", "--model", "yolov7-tiny", "--data", "a" * 5000],
        ["train", "--model", "yolov7-tiny", "--data", "a/" * 3000],
    ],
)
def test_an_input_path_too_long_for_the_system_is_not_found(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    result = lab(*argv)  # each an OSError (file name too long) traceback before
    assert_one_line(result, may_succeed=False)
    found = ("no checkpoint here", "no such file", "no such dataset")
    assert any(message in result.stderr for message in found), result.stderr[:300]


def test_a_huge_integer_in_a_data_yaml_names_its_field(tmp_path):
    from scaling_lab.data.errors import DataError
    from scaling_lab.data.sources import resolve_data

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    (tmp_path / "data.yaml").write_text(f"nc: {HUGE}\nnames: [a]\n")
    with pytest.raises(DataError, match=r"data\.yaml:1: field 'nc': integer too long"):
        resolve_data(tmp_path)
