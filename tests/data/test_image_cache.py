"""The decoded-image cache changes no sample: every augmentation path (mosaic, mixup,
paste-in, copy-paste, a single letterboxed image, flips) and the val split give the same
tensors with the cache as without it, on the first pass and from the cache; a cached image
is read-only, so an in-place edit would fail loudly instead of corrupting later samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaling_lab.data import default_hyp, resolve_data
from scaling_lab.data.dataset import DetectionDataset

DATA = "synth:images=24,size=96"


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    import os

    os.environ.setdefault("SCALING_LAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    return resolve_data(DATA)


HYPS = {
    "mosaic+mixup+paste": {**default_hyp("p5"), "mixup": 0.5, "paste_in": 0.5, "copy_paste": 0.5},
    "single-image": {**default_hyp("tiny"), "mosaic": 0.0, "flipud": 0.5},
}


def _samples(dataset, indices, seed):
    return [dataset[(i, seed + i)] for i in indices]


def _equal(a, b) -> bool:
    return all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] and x[3] == y[3]
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", list(HYPS))
def test_cached_samples_equal_uncached_ones(info, name):
    records = info.records("train")
    cached = DetectionDataset(records, 64, augment=True, hyp=HYPS[name], seed=1)
    plain = DetectionDataset(records, 64, augment=True, hyp=HYPS[name], seed=1, cache_bytes=0)
    assert cached.has_masks  # the synthetic set's masks: paste-in and copy-paste run
    indices = list(range(len(records)))
    first = _samples(cached, indices, 5)
    assert _equal(first, _samples(plain, indices, 5))
    assert len(cached._images) == len(records) and not plain._images  # filled, and not
    assert _equal(_samples(cached, indices, 9), _samples(plain, indices, 9))  # from the cache


def test_val_samples_and_the_byte_budget(info):
    records = info.records("val")
    one = np.asarray(DetectionDataset(records, 64)._load(0)[0]).nbytes
    cached = DetectionDataset(records, 64, cache_bytes=2 * one)  # room for two images
    plain = DetectionDataset(records, 64, cache_bytes=0)
    indices = list(range(len(records)))
    assert _equal(_samples(cached, indices, 0), _samples(plain, indices, 0))
    assert len(cached._images) == 2
    image, _ = cached._load(0)
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1
