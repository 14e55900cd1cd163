"""Anchors fitted to the training labels before a run starts (the reference's autoanchor).

The zoo's anchors are sized for COCO at 640 or 1280 px. Trained on other data or at another
input size (the synthetic set at 128 px), most targets fit no anchor within the assignment's
ratio limit ``anchor_t``, get no positive prediction, and the run learns little. The
reference trainer checks this before training and refits; so does ``Trainer`` (unless
``autoanchor: false``):

1. **Check.** Every training label's width and height at the network input (long side
   ``img_size``, times a per-image scale drawn from U(0.9, 1.1) for the augmentation's scale
   jitter) against every anchor: the ratio ``min(r, 1/r)`` over both sides, worst side. The
   best possible recall (BPR) is the share of labels whose best anchor's ratio exceeds
   ``1 / anchor_t``, i.e. the share the assignment can match at all.
2. **Refit** when BPR < 0.98: k-means (scipy) on the label sizes (whitened by their std; labels
   under 2 px left out), then a random-mutation hill climb of the anchors' fitness (the mean
   best ratio over labels, counting only matches above ``1 / anchor_t``). The fitted anchors
   replace the model's only when their BPR is higher. They are sorted by area, smallest on the
   finest level, like the strides, and rounded to 0.1 px, as the run's spec stores them.

Everything is drawn from a generator seeded by the run's seed, so a run's anchors are a
function of its data and seed (the reference draws from the global RNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scaling_lab.data.sources import ImageRecord

RECALL_GOAL = 0.98  # the reference refits below this best possible recall
MIN_LABEL_PX = 2.0  # smaller labels are left out of the fit (they are mostly noise)
SCALE_JITTER = (0.9, 1.1)  # per-image scale of the check, as the augmentation varies sizes
GENERATIONS = 1000
MUTATION_PROB, MUTATION_SIGMA = 0.9, 0.1


@dataclass(frozen=True)
class AnchorFit:
    """The outcome of the check: the anchors to train with (``anchors``, (L, na, 2) pixels)
    and the best possible recall of the model's anchors and of the ones kept."""

    anchors: np.ndarray
    recall_before: float
    recall_after: float
    refit: bool
    n_labels: int

    def to_dict(self) -> dict:
        return {
            "refit": self.refit,
            "recall_before": round(self.recall_before, 4),
            "recall_after": round(self.recall_after, 4),
            "labels": self.n_labels,
            "anchors": self.anchors.reshape(len(self.anchors), -1).round(1).tolist(),
        }

    def summary(self) -> str:
        if not self.refit:
            return f"autoanchor: best possible recall {self.recall_before:.4f}, anchors kept"
        return (
            f"autoanchor: best possible recall {self.recall_before:.4f} -> "
            f"{self.recall_after:.4f} with anchors fitted to {self.n_labels} labels"
        )


def label_sizes(
    records: Sequence[ImageRecord], img_size: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(n, 2) label widths and heights in pixels of the network input (long side
    ``img_size``); with ``rng``, each image's labels times one scale from ``SCALE_JITTER``."""
    sizes = []
    for rec in records:
        if len(rec.boxes) == 0:
            continue
        scale = img_size / max(rec.width, rec.height)
        if rng is not None:
            scale *= rng.uniform(*SCALE_JITTER)
        boxes = np.asarray(rec.boxes, dtype=np.float64)
        sizes.append((boxes[:, 2:4] - boxes[:, 0:2]) * scale)
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def _best_ratio(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(n,) per label the best anchor's worst-side ratio ``min(r, 1/r)`` (1 = exact fit)."""
    r = wh[:, None, :] / anchors.reshape(-1, 2)[None]
    return np.minimum(r, 1.0 / r).min(-1).max(-1)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, anchor_t: float) -> float:
    """The share of labels some anchor can be assigned to (ratio within ``anchor_t``)."""
    if len(wh) == 0:
        return 1.0
    return float((_best_ratio(wh, anchors) > 1.0 / anchor_t).mean())


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, anchor_t: float) -> float:
    """Mean best ratio over labels, a label counting 0 when no anchor is within the limit."""
    best = _best_ratio(wh, anchors)
    return float((best * (best > 1.0 / anchor_t)).mean())


def fit_anchors(
    wh: np.ndarray,
    n: int,
    anchor_t: float,
    rng: np.random.Generator,
    generations: int = GENERATIONS,
) -> np.ndarray:
    """``n`` anchors (n, 2) fitted to the label sizes ``wh``, sorted by area (see module)."""
    from scipy.cluster.vq import kmeans

    usable = wh[(wh >= MIN_LABEL_PX).all(1)]
    if len(usable) < n:
        raise ValueError(f"{len(usable)} labels of at least {MIN_LABEL_PX:g} px for {n} anchors")
    std = usable.std(0)
    std[std == 0] = 1.0
    centres, _ = kmeans(usable / std, n, iter=30, rng=rng)
    anchors = centres * std
    if len(anchors) < n:  # k-means merged clusters (few distinct sizes): fill from the labels
        extra = usable[rng.choice(len(usable), n - len(anchors), replace=False)]
        anchors = np.concatenate([anchors, extra])
    fitness = anchor_fitness(usable, anchors, anchor_t)
    for _ in range(generations):
        change = np.ones_like(anchors)
        while (change == 1).all():  # mutate until something changes
            mutate = rng.random(anchors.shape) < MUTATION_PROB
            step = rng.random() * rng.standard_normal(anchors.shape) * MUTATION_SIGMA
            change = (mutate * step + 1).clip(0.3, 3.0)
        candidate = (anchors * change).clip(min=MIN_LABEL_PX)
        candidate_fitness = anchor_fitness(usable, candidate, anchor_t)
        if candidate_fitness > fitness:
            anchors, fitness = candidate, candidate_fitness
    return anchors[np.argsort(anchors.prod(1))].round(1)  # as the run's spec stores them


def check_anchors(
    records: Sequence[ImageRecord],
    anchors: np.ndarray,
    img_size: int,
    anchor_t: float,
    seed: int,
) -> AnchorFit:
    """The anchors a run should train with: ``anchors`` ((L, na, 2) pixels, finest level
    first) when they can match at least ``RECALL_GOAL`` of the labels, else fitted ones when
    those match more."""
    anchors = np.asarray(anchors, dtype=np.float64)
    rng = np.random.default_rng([seed, 0xA7C4])
    wh = label_sizes(records, img_size, rng)
    before = best_possible_recall(wh, anchors, anchor_t)
    kept = AnchorFit(anchors, before, before, refit=False, n_labels=len(wh))
    if before >= RECALL_GOAL:
        return kept
    try:
        fitted = fit_anchors(wh, anchors.shape[0] * anchors.shape[1], anchor_t, rng)
    except ValueError:  # too few labels to fit: train with the model's anchors
        return kept
    after = best_possible_recall(wh, fitted, anchor_t)
    if after <= before:
        return kept
    return AnchorFit(fitted.reshape(anchors.shape), before, after, refit=True, n_labels=len(wh))
