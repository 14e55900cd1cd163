"""Checkpoint files: atomic writes, weights_only loads, RNG capture and restore."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from scaling_lab.train import checkpoint as ck


def _draws() -> tuple:
    return random.random(), float(np.random.normal()), float(torch.rand(()))


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.normal()  # leave a cached gaussian in numpy's state
    state = ck.capture_rng()
    expected = _draws()
    path = ck.save_atomic({"format": ck.FORMAT, "rng": state}, tmp_path / "c.pt")
    _draws()
    ck.restore_rng(ck.load_checkpoint(path)["rng"])
    assert _draws() == expected  # numpy's cached gaussian included


def test_loader_generator_state(tmp_path):
    data = list(range(10))
    loader = torch.utils.data.DataLoader(
        data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    state = ck.capture_loader_rng(loader)
    assert "generator" in state
    first = [b.tolist() for b in loader]
    ck.restore_loader_rng(loader, state)
    assert [b.tolist() for b in loader] == first


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "weights" / "last.pt"
    ck.save_atomic({"format": ck.FORMAT, "epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_atomic({"format": ck.FORMAT, "epoch": 2}, path)
    assert ck.load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no checkpoint here"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": 1}, tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="not a scaling_lab training checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ck.CheckpointError):
        ck.load_checkpoint(tmp_path / "junk.pt")
    # a module object (what the reference saves) is refused by weights_only loading
    torch.save({"format": ck.FORMAT, "model": torch.nn.Linear(2, 2)}, tmp_path / "mod.pt")
    with pytest.raises(ck.CheckpointError):
        ck.load_checkpoint(tmp_path / "mod.pt")
