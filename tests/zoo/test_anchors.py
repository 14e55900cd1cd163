"""Every zoo model's anchors against the public config each was taken from.

``scaling_lab/zoo/published/anchors.csv`` records, per model and detection level, the anchors
of the public config named in its ``source`` column (anchor-free models: the head they
follow). The rows from the YOLOv7 repository's ``cfg/`` tree are checked once more against
the copies of those configs under ``tests/fixtures/reference_cfg/``.
"""

import csv
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pytest
import yaml

from scaling_lab import get_block_graph, list_models, resolve_spec

REFERENCE_CFG = Path(__file__).parent.parent / "fixtures" / "reference_cfg"
YOLOV7_REPO = "WongKinYiu/yolov7 (main) cfg/"
P5_SET = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


def _rows() -> dict[str, list[dict[str, str]]]:
    path = resources.files("scaling_lab.zoo") / "published" / "anchors.csv"
    with open(str(path)) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    by_model = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    return dict(by_model)


ROWS = _rows()


def _levels(rows: list[dict[str, str]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row["anchors"].split()) for row in rows)


def test_every_zoo_model_has_a_row_with_its_source():
    assert sorted(ROWS) == list_models()
    assert all(row["source"].strip() for rows in ROWS.values() for row in rows)


@pytest.mark.parametrize("name", list_models())
def test_spec_anchors_equal_the_public_config(name):
    rows = ROWS[name]
    spec = resolve_spec(name)
    if rows[0]["level"] == "-":  # anchor-free: no anchors, a decoupled head
        assert len(rows) == 1 and rows[0]["source"].startswith("anchor-free: ")
        assert not spec.anchors
        head = get_block_graph(name).nodes[-1].type
        assert head in ("yolox_head", "ppyoloe_head")
        return
    assert spec.anchors == _levels(rows)
    levels = [int(row["level"][1:]) for row in rows]
    assert levels == list(range(levels[0], levels[0] + len(levels)))  # small stride first


@pytest.mark.parametrize(
    "name",
    [name for name, rows in ROWS.items() if rows[0]["source"].startswith(YOLOV7_REPO)],
)
def test_rows_from_the_reference_repository_equal_its_configs(name):
    path = ROWS[name][0]["source"][len(YOLOV7_REPO) :].split()[0]
    config = yaml.safe_load((REFERENCE_CFG / path).read_text())
    expected = tuple(tuple(float(v) for v in level) for level in config["anchors"])
    assert _levels(ROWS[name]) == expected


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7-tiny-silu"])
def test_tiny_models_use_the_reference_p5_anchors(name):
    # the reference's tiny configs (training and deploy) carry the YOLOv3/v5 P5 set
    assert resolve_spec(name).anchors == tuple(tuple(float(v) for v in lv) for lv in P5_SET)
