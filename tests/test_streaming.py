"""Image folders stream: decoded lazily, file by file, with the same split and pixels as the
in-memory reading that export uses."""

from __future__ import annotations

import pytest

# Needs torch (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")

import numpy as np
import torch

from vaesdk.imaging.images import save_png
from vaesdk.training.data import FolderImages, GlobalBatchSampler, StackImages, load_image_folder, open_training_data, split_train_val
from vaesdk.training.train import loader


def test_folder_split_and_pixels_match_the_in_memory_reading(tmp_path, fashion_test):
    for i in range(40):
        (tmp_path / f"c{fashion_test.labels[i]}").mkdir(exist_ok=True)
        save_png(tmp_path / f"c{fashion_test.labels[i]}" / f"{i:03d}.png", fashion_test.images[i])
    data = open_training_data("folder", str(tmp_path), 28, 1, limit=30, val_fraction=0.2, seed=5)
    assert isinstance(data.train, FolderImages) and len(data.train) == 24 and len(data.val) == 6
    train, val = split_train_val(load_image_folder(tmp_path, 28, 1).head(30), 0.2, 5)
    streamed = loader(data.val, GlobalBatchSampler(len(data.val), 4), workers=2)
    got = torch.cat(list(streamed)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, val.images)
    np.testing.assert_array_equal(data.train[3].numpy().transpose(1, 2, 0), train.images[3])


def test_global_batches_are_shared_by_stride_and_cover_the_epoch_once():
    whole = list(GlobalBatchSampler(11, 4, seed=3))
    shares = [list(GlobalBatchSampler(11, 4, rank=r, world_size=4, seed=3)) for r in range(4)]
    for step, batch in enumerate(whole):
        assert sorted(sum((s[step] for s in shares), [])) == sorted(batch)
        assert shares[1][step] == batch[1::4]
    assert sorted(sum(whole, [])) == list(range(11))
    assert shares[3][-1] == []  # the last global batch holds 3 images: process 3 has none
    assert StackImages((1, 2, 2))([]).shape == (0, 1, 2, 2)
