"""The reference's hyper-parameter files, key by key: our recipe holds their values, a file in
their format is read as is, and every key of them is read by something (the data pipeline, the
loss or the optimizer), checked by recording the reads of a real sample, loss and schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scaling_lab import create_model
from scaling_lab.data.errors import DataError
from scaling_lab.data.hyp import default_hyp, read_hyp_file
from scaling_lab.train.loss import YoloV7Loss
from scaling_lab.train.optim import Schedule, build_optimizer
from tests.helpers.specs import TINY_SPEC, graph_from
from tests.helpers.squares_dataset import InMemory, masked_square_records

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "reference_hyp.json").read_text())
SIZES = ("tiny", "p5", "p6")
# Keys of the reference's files that nothing reads, in the reference either: ``iou_t`` appears
# only in its hyper-parameter evolution bounds (and a commented-out line of its loss).
UNREAD_BY_REFERENCE = {"iou_t"}


class ReadLog(dict):
    """A dict that records which keys were read (``d[k]`` or ``d.get(k)``) into ``reads``."""

    def __init__(self, data: dict, reads: set[str]) -> None:
        super().__init__(data)
        self.reads = reads

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("size", SIZES)
def test_recipe_holds_the_reference_files_values(size):
    ours = default_hyp(size)
    theirs = REFERENCE["files"][size]
    assert {k: ours[k] for k in theirs} == theirs
    # what our recipe adds: the 9-image share the reference hard-codes, and nothing unknown
    assert set(ours) - set(theirs) <= {"mosaic9", "label_smoothing"}
    assert ours["mosaic9"] == 0.2 and ours["label_smoothing"] == 0.0


def _reads_of_training(hyp: dict) -> set[str]:
    """The hyp keys read by: 40 augmented samples (masked objects, so paste-in and copy-paste
    run), one loss evaluation, the optimizer's construction and every step of a schedule."""
    reads: set[str] = set()
    dataset = InMemory(masked_square_records(), 64, augment=True, hyp=hyp)
    dataset.hyp = ReadLog({**hyp, "copy_paste": 0.5, "paste_in": 0.5}, reads)
    for seed in range(40):
        dataset[(seed % len(dataset), seed)]
    model = create_model(graph_from(TINY_SPEC))
    loss = YoloV7Loss(model, ReadLog(hyp, reads))
    loss.hyp = ReadLog(loss.hyp, reads)  # the loss keeps a copy; record the gains' reads too
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.3]])
    loss(model(torch.zeros(1, 3, 64, 64)), targets, torch.zeros(1, 3, 64, 64))
    optimizer = build_optimizer(model, ReadLog(hyp, reads), batch_size=16)
    schedule = Schedule(ReadLog(hyp, reads), epochs=3, steps_per_epoch=4, batch_size=16)
    for step in range(12):
        schedule.apply(optimizer, step // 4, step)
        schedule.accumulate(step)
    return reads


@pytest.mark.parametrize("size", SIZES)
def test_every_key_of_the_reference_files_is_read(size):
    theirs = REFERENCE["files"][size]
    hyp = {**default_hyp(size), **theirs}
    reads = _reads_of_training(hyp)
    unread = set(theirs) - reads - UNREAD_BY_REFERENCE
    assert not unread, f"keys of hyp.scratch.{size}.yaml read by nothing: {sorted(unread)}"
    assert UNREAD_BY_REFERENCE.isdisjoint(reads)  # the exemption is still true
    assert set(default_hyp(size)) - reads <= UNREAD_BY_REFERENCE  # our own keys are read too


def test_a_reference_hyp_file_reads_as_overrides(tmp_path):
    path = tmp_path / "hyp.scratch.tiny.yaml"
    lines = [f"{k}: {v}  # comment" for k, v in REFERENCE["files"]["tiny"].items()]
    path.write_text("\n".join(["# anchors: 3  # commented out, as in the file", *lines]) + "\n")
    assert read_hyp_file(path) == {k: float(v) for k, v in REFERENCE["files"]["tiny"].items()}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr0: 0.01\nanchors: 3\n", r"hyp\.yaml.*anchors.*unknown hyper-parameter 'anchors'"),
        ("lr0: fast\n", r"hyp\.yaml.*lr0.*must be a finite number, got 'fast'"),
        ("lr0: .inf\n", r"must be a finite number"),
        ("- lr0\n", r"expected 'key: value' lines"),
        ("lr0: [\n", r"not valid YAML"),
    ],
)
def test_bad_hyp_files_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "hyp.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_hyp_file(path)
