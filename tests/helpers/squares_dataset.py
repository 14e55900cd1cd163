"""The SQUARES images as an in-memory dataset, for the augmentation and recipe tests: no
files to write, and every drawn object's box known exactly."""

from __future__ import annotations

import numpy as np

from scaling_lab.data.dataset import DetectionDataset
from scaling_lab.data.sources import ImageRecord
from tests.helpers.data_files import SQUARES, bright_box, draw_image


def square_records() -> list[ImageRecord]:
    """One record per SQUARES image, its boxes and classes as drawn."""
    return [
        ImageRecord(i + 1, None, w, h, np.array(b, np.float32), np.array(c))
        for i, (_, w, h, b, c) in enumerate(SQUARES)
    ]


class InMemory(DetectionDataset):
    """The SQUARES images drawn on demand instead of read from files."""

    def _load(self, index):
        rec = self.records[index]
        _, w, h, boxes, classes = SQUARES[index]
        return draw_image(w, h, boxes, classes), rec


# augmentation settings of the box-following tests: geometric ones on, colour ones off (the
# colour of a pixel tells its class)
HYP = {
    "mosaic": 1.0,
    "mixup": 0.0,
    "degrees": 10.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 3.0,
    "perspective": 0.0,
    "flipud": 0.5,
    "fliplr": 0.5,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
}


def check_sample(img: np.ndarray, labels: np.ndarray, size: int) -> int:
    """Every label box is tight around a rectangle of its class's colour (rotated ones too: the
    box around the warped corners is the warped rectangle's extent). A rotated rectangle cut
    by the image border only needs to lie inside its box (the clipped corner box is looser)."""
    for cls, cx, cy, w, h in labels.tolist():
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * size
        found = bright_box(img, box, margin=3, cls=int(cls))
        assert found is not None, f"no object under box {box}"
        if min(box) > 0.5 and max(box) < size - 0.5:
            np.testing.assert_allclose(found, box, atol=1.6)
        else:
            assert (np.array(found[:2]) >= box[:2] - 1.6).all(), (found, box)
            assert (np.array(found[2:]) <= box[2:] + 1.6).all(), (found, box)
    return len(labels)


def masked_square_records() -> list[ImageRecord]:
    """SQUARES with each square's polygon as its segmentation."""
    recs = square_records()
    for rec, (_, _, _, boxes, _) in zip(recs, SQUARES):
        rec.segments = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes]
    return recs
