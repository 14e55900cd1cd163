"""build_dataloader: batch format, val mapping back to the annotations, determinism, DDP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaling_lab.data import build_dataloader, resolve_data
from scaling_lab.data.dataset import EpochBatchSampler
from scaling_lab.data.errors import DataError
from tests.helpers.data_files import write_coco_both

FAST_HYP = {
    "mosaic": 1.0,
    "mixup": 0.5,
    "scale": 0.5,
    "translate": 0.1,
    "fliplr": 0.5,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
}


@pytest.fixture
def squares(tmp_path):
    return resolve_data(write_coco_both(tmp_path / "squares"))


def test_resolve_coco_maps_category_ids_to_contiguous_classes(squares):
    assert squares.format == "coco" and squares.nc == 2
    assert squares.names == ["class3", "class7"] and squares.category_ids == [3, 7]
    assert squares.train_ann.name == "instances_train.json"
    recs = squares.records("val")
    assert [r.id for r in recs] == [1, 2, 3, 4]
    assert recs[0].classes.tolist() == [0, 1]


def test_val_batch_format_and_mapping_back(squares):
    loader = build_dataloader(squares, "val", img_size=128, batch_size=3, augment=False)
    assert len(loader) == 2
    batches = list(loader)
    images, targets, ids, shapes = batches[0]
    assert images.dtype == torch.float32 and images.shape == (3, 3, 128, 128)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert targets.dtype == torch.float32 and targets.shape[1] == 6
    assert ids == [1, 2, 3]  # val keeps the file order
    assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
    # targets mapped back through the shapes give the annotation boxes
    gt = json.loads(squares.val_ann.read_text())["annotations"]
    for _images, targets, ids, shapes in batches:
        for b, (image_id, (_h0, _w0, r, pw, ph)) in enumerate(zip(ids, shapes)):
            t = targets[targets[:, 0] == b].double().numpy()
            cx, cy, w, h = (t[:, 2:] * 128).T
            back = np.stack([(cx - w / 2 - pw) / r, (cy - h / 2 - ph) / r, w / r, h / r], 1)
            want = [a["bbox"] for a in gt if a["image_id"] == image_id]
            np.testing.assert_allclose(back, want, atol=1e-3)
            assert t[:, 1].tolist() == [
                [3, 7].index(a["category_id"]) for a in gt if a["image_id"] == image_id
            ]


def _batches(loader, n=2):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if i + 1 == n:
            break
    return out


def _same(a, b) -> bool:
    return all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b)
    )


def test_training_batches_are_deterministic_for_a_seed(squares):
    def make(seed, workers=0):
        return build_dataloader(
            squares,
            "train",
            img_size=96,
            batch_size=2,
            augment=True,
            hyp=FAST_HYP,
            seed=seed,
            workers=workers,
        )

    first = _batches(make(0))
    assert _same(first, _batches(make(0)))
    assert not _same(first, _batches(make(1)))
    # worker processes do not change the samples
    assert _same(first, _batches(make(0, workers=2)))


def test_epochs_differ_and_set_epoch_replays(squares):
    loader = build_dataloader(
        squares, "train", img_size=96, batch_size=4, augment=True, hyp=FAST_HYP, seed=3
    )
    epoch0 = _batches(loader, 1)
    epoch1 = _batches(loader, 1)
    assert not _same(epoch0, epoch1)
    loader.batch_sampler.set_epoch(0)
    assert _same(epoch0, _batches(loader, 1))


def test_sampler_shards_across_ranks():
    n = 10
    train = [EpochBatchSampler(n, 2, shuffle=True, seed=5, rank=r, world_size=3) for r in range(3)]
    items = [[i for batch in s for i, _ in batch] for s in train]
    assert [len(x) for x in items] == [4, 4, 4] and len(train[0]) == 2
    assert {i for x in items for i in x} == set(range(n))  # padded by wrapping, all covered
    val = [
        EpochBatchSampler(n, 2, shuffle=False, rank=r, world_size=3, pad=False) for r in range(3)
    ]
    items = [[i for batch in s for i, _ in batch] for s in val]
    assert sorted(i for x in items for i in x) == list(range(n))  # each image exactly once
    with pytest.raises(DataError, match="rank"):
        EpochBatchSampler(n, 2, shuffle=False, rank=3, world_size=3)


def test_build_dataloader_distributed(squares):
    kwargs = dict(img_size=64, batch_size=1, augment=False, world_size=2)
    ids = [
        [
            i
            for _, _, batch_ids, _ in build_dataloader(squares, "val", rank=r, **kwargs)
            for i in batch_ids
        ]
        for r in (0, 1)
    ]
    assert sorted(ids[0] + ids[1]) == [1, 2, 3, 4] and not set(ids[0]) & set(ids[1])


def test_bad_loader_arguments(squares):
    with pytest.raises(DataError, match="multiple of 32"):
        build_dataloader(squares, "val", img_size=100, batch_size=2, augment=False)
    with pytest.raises(DataError, match="unknown split"):
        build_dataloader(squares, "test", img_size=64, batch_size=2, augment=False)
