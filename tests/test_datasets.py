"""A training run's data and its split (vaesdk.evaluation.datasets): the one split that training,
export's calibration and metrics, and the tests use."""

from __future__ import annotations

import numpy as np
import pytest

from vaesdk.evaluation.datasets import ImageSet, split_indices, split_train_val, training_split
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.imaging.images import save_png


def test_the_split_is_seeded_disjoint_and_holds_out_the_stated_fraction():
    train, val = split_indices(120, 1 / 12, seed=3)
    assert len(val) == 10 and len(train) == 110
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(120))
    again = split_indices(120, 1 / 12, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(120, 1 / 12, seed=4)[1])
    # The validation images are the first of the seeded permutation (what every run recorded).
    assert np.array_equal(val, np.random.default_rng(3).permutation(120)[:10])
    with pytest.raises(InvalidArgumentError, match="2 images are too few to hold out 2 for validation"):
        split_indices(2, 0.9, seed=0)


def test_split_train_val_keeps_labels_and_class_names_with_their_images():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    data = ImageSet(images, np.arange(20) % 3, ("a", "b", "c"))
    train, val = split_train_val(data, 0.25, seed=1)
    assert len(val) == 5 and train.class_names == val.class_names == ("a", "b", "c")
    for part in (train, val):
        assert np.array_equal(part.labels, part.images[:, 0, 0, 0].astype(np.int64) % 3)


def test_a_folder_runs_split_is_reproduced_from_its_settings(tmp_path):
    for i in range(12):
        save_png(tmp_path / f"{i:02d}.png", np.full((4, 4, 1), i * 20, np.uint8))
    train, val = training_split("folder", tmp_path, 4, 1, 10, 0.2, seed=5)
    assert len(train) == 8 and len(val) == 2  # limit 10: the first ten files, then the split
    shades = sorted(int(x) for x in np.concatenate([train.images, val.images])[:, 0, 0, 0])
    assert shades == [i * 20 for i in range(10)]
    _, val_idx = split_indices(10, 0.2, seed=5)
    assert sorted(int(x) for x in val.images[:, 0, 0, 0]) == sorted(int(i) * 20 for i in val_idx)


def test_the_training_config_splits_through_the_same_function(tmp_path):
    from vaesdk.training.config import ModelConfig, TrainConfig

    for i in range(12):
        save_png(tmp_path / f"{i:02d}.png", np.full((16, 16, 1), i * 20, np.uint8))
    cfg = TrainConfig(model=ModelConfig(image_size=16, channels=1), dataset="folder", data_dir=str(tmp_path), seed=2, val_fraction=0.25)
    train, val = cfg.split()
    expected = training_split("folder", tmp_path, 16, 1, 0, 0.25, seed=2)
    assert np.array_equal(train.images, expected[0].images) and np.array_equal(val.images, expected[1].images)
