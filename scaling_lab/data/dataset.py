"""The detection dataset, its sampler and ``build_dataloader``.

A batch is ``(images, targets, image_ids, shapes)``:

- ``images``: float32 (B, 3, S, S) in [0, 1], RGB, S = ``img_size``;
- ``targets``: float32 (N, 6): image index in the batch, class index, cx, cy, w, h normalized
  to the S x S network input;
- ``image_ids``: the COCO image ids;
- ``shapes``: per image ``(orig_h, orig_w, ratio, pad_w, pad_h)``; a letterboxed point maps
  back as ``x = (x' - pad_w) / ratio``. For augmented (mosaic / affine) samples there is no
  such mapping and the tuple is ``(orig_h, orig_w, 1.0, 0.0, 0.0)``.

Training samples (``augment=True``), as the reference recipe: with probability ``mosaic`` a
mosaic (9 images with probability ``mosaic9``, else 4) on a 2S canvas, copy-paste within it
(probability ``copy_paste`` per masked object), then a random affine (degrees, translate,
scale, shear, perspective) down to S; with probability ``mixup`` a blend with a second mosaic
(4 or 9 images alike). Otherwise a letterboxed image with the same random affine. Then HSV
gains, paste-in (probability ``paste_in``: objects cut from other images' masks, ``paste.py``),
up-down and left-right flips. Validation samples: letterbox only.

Determinism: the sampler draws, per epoch, the order and one seed per sample from
``(seed, epoch)``; a sample is a pure function of its index and seed. So batches depend only on
``seed`` and the epoch, not on the number of workers or processes. The epoch advances each
time the loader is iterated; ``loader.batch_sampler.set_epoch(e)`` sets it (as with
``DistributedSampler``, which this sampler replaces when ``rank >= 0``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scaling_lab.data import augment as tf
from scaling_lab.data.errors import DataError
from scaling_lab.data.hyp import default_hyp
from scaling_lab.data.masks import decode, resize_mask
from scaling_lab.data.paste import MIN_SAMPLES, copy_paste, object_samples, paste_in
from scaling_lab.data.sources import DatasetInfo, ImageRecord

Shape = tuple[int, int, float, float, float]
MOSAIC9_SHARE = default_hyp("p5")["mosaic9"]  # the recipe's share, for a hyp without the key
# decoded images a dataset (each loader worker's copy) keeps in memory, read-only, so that a
# mosaic's four reads of a small set decode each file once: 40% of the main job's loading time
# was PNG/JPEG decoding. A set larger than this is cached up to it. Samples are unchanged.
IMAGE_CACHE_BYTES = 512 * 2**20


def read_image(path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); a DataError naming the file if it can't be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError("image file not found", source=path) from None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image: {exc}", source=path) from None


class DetectionDataset(Dataset):
    """Images and boxes of one split, as network inputs (see the module docstring).

    ``dataset[i]`` or ``dataset[(i, seed)]`` -> (uint8 tensor (3, S, S), float32 labels (n, 5)
    ``class cx cy w h`` normalized, image id, shape tuple).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        img_size: int,
        *,
        augment: bool = False,
        hyp: dict | None = None,
        seed: int = 0,
        category_ids: list[int] | None = None,
        names: list[str] | None = None,
        cache_bytes: int = IMAGE_CACHE_BYTES,
    ) -> None:
        if not records:
            raise DataError("the split has no images")
        self.records = records
        self.img_size = img_size
        self.augment = augment
        self.hyp = dict(hyp) if hyp is not None else default_hyp("tiny")
        self.seed = seed
        self.category_ids = category_ids
        self.names = names
        self.has_masks = any(rec.segments for rec in records)  # paste-in / copy-paste need them
        self._images: dict[int, np.ndarray] = {}  # index -> decoded image (read-only)
        self._cache_left = cache_bytes

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is None:
            seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        try:
            return self._sample(int(index), np.random.default_rng(seed))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"sample {index}: {type(exc).__name__}: {exc}", source=self.records[index].path
            ) from exc

    # -- loading

    def _load(self, index: int) -> tuple[np.ndarray, ImageRecord]:
        rec = self.records[index]
        cached = self._images.get(index)
        if cached is not None:
            return cached, rec
        img = read_image(rec.path)
        if img.shape[:2] != (rec.height, rec.width):
            raise DataError(
                f"image is {img.shape[1]}x{img.shape[0]} but the annotations say "
                f"{rec.width}x{rec.height}",
                source=rec.path,
            )
        if img.nbytes <= self._cache_left:
            img.flags.writeable = False  # shared by every later sample: no in-place edits
            self._images[index] = img
            self._cache_left -= img.nbytes
        return img, rec

    def _load_resized(self, index: int, masks: bool = False):
        """The image resized to long side S, its boxes and classes, and (with ``masks``) each
        object's mask at that size (None for an object without one)."""
        img, rec = self._load(index)
        img, r = tf.resize_long_side(img, self.img_size)
        object_masks: list = [None] * len(rec.boxes)
        if masks and rec.segments:
            object_masks = [
                None
                if seg is None
                else resize_mask(decode(seg, rec.height, rec.width), img.shape[:2], r)
                for seg in rec.segments
            ]
        return img, rec.boxes.astype(np.float64) * r, rec.classes, object_masks

    def _canvas(self, index: int, n: int, rng: np.random.Generator, masks: bool):
        """A 4- or 9-image mosaic canvas (2S square) with its boxes, classes and (with
        ``masks``) each object's canvas mask."""
        picks = [index, *rng.integers(0, len(self.records), n - 1).tolist()]
        loaded = [self._load_resized(i, masks) for i in picks]
        compose = tf.mosaic9 if n == 9 else tf.mosaic4
        canvas, boxes, owners, offsets = compose(
            [x[0] for x in loaded], [x[1] for x in loaded], self.img_size, rng
        )
        classes = np.concatenate([x[2] for x in loaded])[: len(owners)]
        object_masks: list = [None] * len(owners)
        if masks:
            object_masks = [
                _place(m, offsets[tile], canvas.shape[:2])
                for tile, x in enumerate(loaded)
                for m in x[3]
            ]
        return canvas, boxes, classes, object_masks

    def _mosaic(self, index: int, rng: np.random.Generator):
        n = 9 if rng.random() < self.hyp.get("mosaic9", MOSAIC9_SHARE) else 4
        p_copy = self.hyp.get("copy_paste", 0.0)
        use_masks = bool(p_copy) and self.has_masks
        canvas, boxes, classes, masks = self._canvas(index, n, rng, use_masks)
        if use_masks:
            canvas, boxes, classes = copy_paste(canvas, boxes, classes, masks, p_copy, rng)
        img, boxes, keep = tf.random_affine(canvas, boxes, self.img_size, rng, self.hyp)
        return img, boxes, classes[keep]

    def _paste_in(self, img, boxes, classes, rng: np.random.Generator):
        """Paste objects cut from donor mosaics (4 images each, no affine, as the reference's
        ``load_samples``) until ``MIN_SAMPLES`` are collected or a donor gives none."""
        samples: list = []
        while len(samples) < MIN_SAMPLES:
            donor = int(rng.integers(0, len(self.records)))
            canvas, d_boxes, d_classes, d_masks = self._canvas(donor, 4, rng, masks=True)
            found = object_samples(canvas, d_boxes, d_classes, d_masks, rng)
            if not found:
                break
            samples += found
        return paste_in(img, boxes, classes, samples, rng)

    # -- one sample

    def _sample(self, index: int, rng: np.random.Generator):
        rec = self.records[index]
        size, hyp = self.img_size, self.hyp
        shape: Shape = (rec.height, rec.width, 1.0, 0.0, 0.0)
        if self.augment:
            if rng.random() < hyp.get("mosaic", 0.0):
                img, boxes, classes = self._mosaic(index, rng)
                if rng.random() < hyp.get("mixup", 0.0):
                    img2, boxes2, classes2 = self._mosaic(
                        int(rng.integers(0, len(self.records))), rng
                    )
                    img = tf.mixup(img, img2, rng)
                    boxes = np.concatenate([boxes, boxes2])
                    classes = np.concatenate([classes, classes2])
            else:
                img0, _ = self._load(index)
                img, ratio, pad = tf.letterbox(img0, size)
                boxes = tf.boxes_to_letterbox(rec.boxes, ratio, pad)
                img, boxes, keep = tf.random_affine(img, boxes, size, rng, hyp)
                classes = rec.classes[keep]
            img = tf.augment_hsv(
                img, rng, hyp.get("hsv_h", 0.0), hyp.get("hsv_s", 0.0), hyp.get("hsv_v", 0.0)
            )
            if rng.random() < hyp.get("paste_in", 0.0) and self.has_masks:
                img, boxes, classes = self._paste_in(img, boxes, classes, rng)
            if rng.random() < hyp.get("flipud", 0.0):
                img, boxes = tf.flip_ud(img, boxes)
            if rng.random() < hyp.get("fliplr", 0.0):
                img, boxes = tf.flip_lr(img, boxes)
        else:
            img0, _ = self._load(index)
            img, ratio, pad = tf.letterbox(img0, size)
            boxes = tf.boxes_to_letterbox(rec.boxes, ratio, pad)
            classes = rec.classes
            shape = (rec.height, rec.width, ratio, pad[0], pad[1])
        labels = np.zeros((len(boxes), 5), dtype=np.float32)
        if len(boxes):
            labels[:, 0] = classes
            labels[:, 1:] = tf.xyxy_to_cxcywh_norm(boxes, size)
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return image, torch.from_numpy(labels), rec.id, shape


def _place(mask: np.ndarray | None, offset: tuple[int, int], shape: tuple[int, int]):
    """A tile's object mask on the canvas (cut where the tile is); None stays None."""
    if mask is None:
        return None
    out = np.zeros(shape, dtype=bool)
    tf.paste_at(out, mask, offset)
    return out


def collate(batch):
    """Stack samples: float images in [0, 1] and (N, 6) targets with the batch index first.

    Stacks in numpy: torch's multi-threaded copy kernels are much slower when the CPU is
    oversubscribed (many loader workers or processes), numpy's single-threaded ones are not.
    """
    images, labels, ids, shapes = zip(*batch)
    stacked = np.stack([im.numpy() for im in images]).astype(np.float32)
    stacked *= np.float32(1 / 255)
    targets = [
        np.concatenate([np.full((len(lab), 1), i, dtype=np.float32), lab.numpy()], 1)
        for i, lab in enumerate(labels)
    ]
    return (
        torch.from_numpy(stacked),
        torch.from_numpy(np.concatenate(targets, 0)),
        list(ids),
        list(shapes),
    )


class EpochBatchSampler(Sampler):
    """Batches of ``(index, sample_seed)``: order and seeds drawn per epoch from
    ``(seed, epoch)``. With ``rank >= 0`` each process takes every ``world_size``-th sample of
    the epoch's order (padded by wrapping around when ``pad``, as DistributedSampler does)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = -1,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
        if rank >= 0 and not 0 <= rank < world_size:
            raise DataError(f"rank {rank} outside world_size {world_size}", field="rank")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = max(rank, 0), (world_size if rank >= 0 else 1)
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _n_local(self) -> int:
        if self.pad:
            return math.ceil(self.n / self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def epoch_items(self, epoch: int) -> list[tuple[int, int]]:
        """This process's (index, seed) pairs for an epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        total = self._n_local() * self.world_size if self.pad else self.n
        order = np.resize(order, total)  # padding wraps around to the first samples
        seeds = rng.integers(0, 2**63 - 1, size=total, dtype=np.int64)
        order, seeds = order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]
        return list(zip(order.tolist(), seeds.tolist()))

    def __iter__(self):
        # A generator: the epoch is taken (and advanced) when the first batch is drawn, not
        # when iter() is called (DataLoader calls iter() more than once when it starts workers).
        items = self.epoch_items(self.epoch)
        self.epoch += 1
        bs = self.batch_size
        for i in range(0, len(items), bs):
            yield items[i : i + bs]

    def __len__(self) -> int:
        return math.ceil(self._n_local() / self.batch_size)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(
    info: DatasetInfo,
    split: str,
    *,
    img_size: int,
    batch_size: int,
    augment: bool,
    hyp: dict | None = None,
    workers: int = 0,
    seed: int = 0,
    shuffle: bool | None = None,
    rank: int = -1,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over one split (see the module docstring for the batch format).

    ``hyp``: the augmentation keys of the recipe (``default_hyp``); None means the ``tiny``
    recipe; a key left out of a given dict means that augmentation is off. ``shuffle``
    defaults to True for ``train`` and False for ``val``. Validation splits are sharded
    without padding (every image once over all ranks).
    """
    if img_size < 32 or img_size % 32:
        raise DataError(f"img_size must be a multiple of 32, got {img_size}", field="img_size")
    dataset = DetectionDataset(
        info.records(split),
        img_size,
        augment=augment,
        hyp=hyp,
        seed=seed,
        category_ids=info.category_ids,
        names=info.names,
    )
    sampler = EpochBatchSampler(
        len(dataset),
        batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        pad=split == "train",
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
