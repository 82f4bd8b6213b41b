"""Tests of jmedseg.data: folder datasets, checks, validation carve, training sampler, synthetic data."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from jmedseg.data import (
    Sample,
    TrainSampler,
    build_datasets,
    generate_synthetic,
    load_image,
    load_split,
    split_train_val,
    synthetic_root,
)
from jmedseg.data import synthetic as synthetic_module
from jmedseg.errors import CheckpointError, ConfigError, DataError


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def rgb(height=5, width=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def binary_mask(height=5, width=6, seed=0, high=255):
    return (np.random.default_rng(seed).random((height, width)) > 0.5).astype(np.uint8) * high


def make_split(root, split="train", names=("a", "b"), image_ext=".png", mask_ext=".png", fov=False, size=(5, 6)):
    for i, name in enumerate(names):
        save(root / split / "images" / f"{name}{image_ext}", rgb(*size, seed=i))
        save(root / split / "masks" / f"{name}{mask_ext}", binary_mask(*size, seed=i))
        if fov:
            save(root / split / "fov" / f"{name}.png", np.full(size, 255, np.uint8))
    return root


def standardised(values):
    values = np.asarray(values, np.float64)
    return (values - values.mean()) / values.std()


# ----------------------------------------------------------------------------- loading


def test_load_split_shapes_dtypes_and_sorted_names(tmp_path):
    make_split(tmp_path, names=("b", "a", "c"), fov=True)
    dataset = load_split(tmp_path, "train")
    assert dataset.names == ["a", "b", "c"]
    sample = dataset[0]
    assert isinstance(sample, Sample) and sample.name == "a"
    assert sample.image.shape == (5, 6, 3) and sample.image.dtype == np.float32
    assert sample.mask.shape == (5, 6) and sample.mask.dtype == np.int64
    assert sample.fov.dtype == bool and sample.fov.all()
    np.testing.assert_array_equal(sample.mask, binary_mask(seed=1) // 255)  # "a" was written second
    # Per-channel standardisation: zero mean, unit std.
    np.testing.assert_allclose(sample.image.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(sample.image.reshape(-1, 3).std(0), 1, atol=1e-4)
    np.testing.assert_allclose(sample.image[..., 0].ravel(), standardised(rgb(seed=1)[..., 0].ravel()), atol=1e-5)


def test_masks_in_0_1_and_0_255_load_the_same(tmp_path):
    save(tmp_path / "s1" / "images" / "x.png", rgb())
    save(tmp_path / "s1" / "masks" / "x.png", binary_mask(high=255))
    save(tmp_path / "s2" / "images" / "x.png", rgb())
    save(tmp_path / "s2" / "masks" / "x.png", binary_mask(high=1))
    a, b = load_split(tmp_path, "s1")[0].mask, load_split(tmp_path, "s2")[0].mask
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0, 1}


def test_jpeg_image_matches_png_mask_by_base_name(tmp_path):
    make_split(tmp_path, names=("p1",), image_ext=".jpg", mask_ext=".png")
    sample = load_split(tmp_path, "train")[0]
    assert sample.name == "p1" and sample.image.shape == (5, 6, 3)


def test_gray_image_is_repeated_to_three_channels(tmp_path):
    gray = np.array([[0, 50, 100], [150, 200, 250]], np.uint8)
    save(tmp_path / "train" / "images" / "g.png", gray)
    save(tmp_path / "train" / "masks" / "g.png", np.zeros((2, 3), np.uint8))
    image = load_split(tmp_path, "train")[0].image
    assert image.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_allclose(image[..., channel].ravel(), standardised(gray.ravel()), atol=1e-5)


def test_rgb_image_becomes_luminance_with_one_channel(tmp_path):
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    path = save(tmp_path / "c.png", pixels)
    image = load_image(path, in_channels=1)
    assert image.shape == (1, 3, 1)
    # cv2 luminance 0.299 R + 0.587 G + 0.114 B, rounded to 8 bit: 76, 150, 29.
    np.testing.assert_allclose(image.ravel(), standardised([76, 150, 29]), atol=1e-5)


def test_rgba_alpha_is_dropped(tmp_path):
    pixels = rgb()
    alpha = np.random.default_rng(5).integers(0, 256, (5, 6, 1), dtype=np.uint8)
    with_alpha = load_image(save(tmp_path / "a.png", np.concatenate([pixels, alpha], 2), mode="RGBA"))
    without = load_image(save(tmp_path / "b.png", pixels))
    np.testing.assert_array_equal(with_alpha, without)


def test_16_bit_image_is_scaled_to_8_bit_range(tmp_path):
    gray8 = np.random.default_rng(3).integers(0, 256, (40, 40), dtype=np.uint8)
    path16 = tmp_path / "g16.png"
    assert cv2.imwrite(str(path16), gray8.astype(np.uint16) * 257)
    path8 = save(tmp_path / "g8.png", gray8)
    np.testing.assert_allclose(load_image(path16), load_image(path8), atol=1e-5)
    # CLAHE works on 8-bit values, so equal results show the 65535 -> 255 scaling.
    np.testing.assert_allclose(load_image(path16, 1, "green_clahe"), load_image(path8, 1, "green_clahe"), atol=1e-5)


def test_green_clahe_uses_only_the_green_channel(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    other_red = pixels.copy()
    other_red[..., 0] = 255 - other_red[..., 0]
    first = load_image(save(tmp_path / "a.png", pixels), in_channels=1, preprocess="green_clahe")
    second = load_image(save(tmp_path / "b.png", other_red), in_channels=1, preprocess="green_clahe")
    assert first.shape == (32, 32, 1)
    np.testing.assert_array_equal(first, second)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(pixels[..., 1]))
    np.testing.assert_allclose(first[..., 0], standardised(expected), atol=1e-4)


def test_green_clahe_requires_one_input_channel(tmp_path):
    make_split(tmp_path)
    with pytest.raises(DataError, match=r"model\.in_channels.*must be 1"):
        load_split(tmp_path, "train", in_channels=3, preprocess="green_clahe")


def test_invalid_options_name_their_config_key(tmp_path):
    make_split(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.in_channels"):
        load_split(tmp_path, "train", in_channels=2)
    with pytest.raises(ConfigError, match=r"data\.preprocess"):
        load_split(tmp_path, "train", preprocess="sharpen")
    with pytest.raises(ConfigError, match=r"model\.num_classes"):
        load_split(tmp_path, "train", num_classes=1)


def test_standardisation_statistics_come_from_the_fov(tmp_path):
    image = np.zeros((4, 4), np.uint8)
    image[:2] = [[10, 20, 30, 40], [50, 60, 70, 80]]
    image[2:] = 255  # outside the FOV; must not affect the statistics
    fov = np.zeros((4, 4), np.uint8)
    fov[:2] = 255
    save(tmp_path / "train" / "images" / "f.png", image)
    save(tmp_path / "train" / "masks" / "f.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "train" / "fov" / "f.png", fov)
    sample = load_split(tmp_path, "train", in_channels=1)[0]
    np.testing.assert_allclose(sample.image[:2, :, 0].ravel(), standardised(range(10, 90, 10)), atol=1e-5)
    assert sample.fov.sum() == 8


def test_multiclass_masks(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    save(tmp_path / "train" / "images" / "m.png", rgb(2, 3))
    save(tmp_path / "train" / "masks" / "m.png", labels)
    mask = load_split(tmp_path, "train", num_classes=3)[0].mask
    np.testing.assert_array_equal(mask, labels)
    with pytest.raises(DataError, match=r"m\.png: mask values \{0, 1, 2\} are outside \{0, 255\} or \{0, 1\}"):
        load_split(tmp_path, "train", num_classes=2)


def test_multiclass_mask_value_out_of_range(tmp_path):
    save(tmp_path / "train" / "images" / "m.png", rgb(2, 3))
    save(tmp_path / "train" / "masks" / "m.png", np.array([[0, 1, 3], [2, 1, 0]], np.uint8))
    expected = r"masks/m\.png: mask values \{0, 1, 2, 3\} are outside 0\.\.2 \(num_classes=3\)"
    with pytest.raises(DataError, match=expected):
        load_split(tmp_path, "train", num_classes=3)


def test_binary_mask_values_outside_allowed_set_are_listed(tmp_path):
    save(tmp_path / "train" / "images" / "03.png", rgb(2, 3))
    save(tmp_path / "train" / "masks" / "03.png", np.array([[0, 7, 255], [0, 0, 0]], np.uint8))
    with pytest.raises(DataError, match=r"masks/03\.png: mask values \{0, 7, 255\}"):
        load_split(tmp_path, "train")


def test_images_without_masks_are_listed_up_to_five(tmp_path):
    make_split(tmp_path, names=("ok",))
    for i in range(7):
        save(tmp_path / "train" / "images" / f"lonely{i}.png", rgb())
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "train")
    message = str(info.value)
    assert "no mask for image(s) lonely0, lonely1, lonely2, lonely3, lonely4, ... (7 in total)" in message
    assert "lonely5" not in message and "\n" not in message


def test_mask_without_image(tmp_path):
    make_split(tmp_path, names=("a",))
    save(tmp_path / "train" / "masks" / "ghost.png", binary_mask())
    with pytest.raises(DataError, match=r"masks: mask without image: ghost"):
        load_split(tmp_path, "train")


def test_fov_must_pair_with_images(tmp_path):
    make_split(tmp_path, names=("a", "b"))
    save(tmp_path / "train" / "fov" / "a.png", np.full((5, 6), 255, np.uint8))
    with pytest.raises(DataError, match=r"fov: no fov for image\(s\) b"):
        load_split(tmp_path, "train")


def test_mask_size_mismatch_gives_both_sizes(tmp_path):
    save(tmp_path / "train" / "images" / "s.png", rgb(5, 6))
    save(tmp_path / "train" / "masks" / "s.png", binary_mask(4, 5))
    with pytest.raises(DataError, match=r"masks/s\.png: mask size 5x4 does not match image size 6x5"):
        load_split(tmp_path, "train")


def test_fov_size_mismatch_and_non_binary_fov(tmp_path):
    make_split(tmp_path, names=("s",))
    save(tmp_path / "train" / "fov" / "s.png", np.full((3, 3), 255, np.uint8))
    with pytest.raises(DataError, match=r"fov/s\.png: fov size 3x3 does not match image size 6x5"):
        load_split(tmp_path, "train")
    save(tmp_path / "train" / "fov" / "s.png", np.tile(np.array([0, 128, 255], np.uint8), (5, 2)))
    with pytest.raises(DataError, match=r"fov/s\.png: fov is not binary: values \{0, 128, 255\}"):
        load_split(tmp_path, "train")


def test_corrupt_and_truncated_files_are_reported(tmp_path):
    make_split(tmp_path, names=("t",))
    image_path = tmp_path / "train" / "images" / "t.png"
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"images/t\.png: cannot decode image"):
        load_split(tmp_path, "train")
    image_path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"images/t\.png: cannot decode image"):
        load_split(tmp_path, "train")


def test_truncated_gif_mask_is_reported(tmp_path):
    make_split(tmp_path, names=("t",))
    (tmp_path / "train" / "masks" / "t.png").unlink()
    gif = save(tmp_path / "train" / "masks" / "t.gif", binary_mask(5, 6))
    data = gif.read_bytes()
    gif.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"masks/t\.gif: cannot read image file"):
        load_split(tmp_path, "train")


def test_gif_masks_and_images_are_read(tmp_path):
    mask = binary_mask(5, 6)
    gray = np.random.default_rng(9).integers(0, 256, (5, 6), dtype=np.uint8)
    save(tmp_path / "train" / "images" / "g.gif", gray)
    save(tmp_path / "train" / "masks" / "g.gif", mask)
    with Image.open(tmp_path / "train" / "masks" / "g.gif") as written:
        assert written.mode == "P"
    sample = load_split(tmp_path, "train")[0]
    np.testing.assert_array_equal(sample.mask, mask // 255)
    np.testing.assert_allclose(sample.image[..., 1].ravel(), standardised(gray.ravel()), atol=1e-5)


def test_missing_and_empty_split(tmp_path):
    with pytest.raises(DataError, match=r"valid: split folder not found"):
        load_split(tmp_path, "valid")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir()
    (tmp_path / "train" / "images" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"images: empty split"):
        load_split(tmp_path, "train")


def test_hidden_files_are_ignored(tmp_path):
    make_split(tmp_path, names=("a",))
    (tmp_path / "train" / "images" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "images" / "._a.png").write_bytes(b"resource fork")
    (tmp_path / "train" / "masks" / ".hidden.png").write_bytes(b"junk")
    assert load_split(tmp_path, "train").names == ["a"]


def test_two_files_with_one_base_name_are_rejected(tmp_path):
    make_split(tmp_path, names=("a",))
    save(tmp_path / "train" / "images" / "a.jpg", rgb())
    with pytest.raises(DataError, match=r"base name 'a' is used by two files"):
        load_split(tmp_path, "train")


def test_image_only_split_needs_require_masks_false(tmp_path):
    save(tmp_path / "unlabelled" / "images" / "u.png", rgb())
    with pytest.raises(DataError, match=r"masks: masks folder not found"):
        load_split(tmp_path, "unlabelled")
    dataset = load_split(tmp_path, "unlabelled", require_masks=False)
    assert dataset[0].mask is None and dataset[0].fov is None and not dataset.has_masks


def test_cache_false_loads_the_same_and_items_are_fresh_copies(tmp_path):
    make_split(tmp_path, fov=True)
    cached, lazy = load_split(tmp_path, "train"), load_split(tmp_path, "train", cache=False)
    for a, b in zip(cached, lazy):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    cached[0].mask[:] = 7
    assert cached[0].mask.max() == 1


# ----------------------------------------------------------------------------- validation carve


def test_split_train_val_is_deterministic_and_disjoint(tmp_path):
    names = [f"{i:02d}" for i in range(10)]
    make_split(tmp_path, names=names, size=(2, 2))
    dataset = load_split(tmp_path, "train")
    train, val = split_train_val(dataset, 0.2, seed=0)
    expected_val = sorted(names[i] for i in np.random.RandomState(0).permutation(10)[:2])
    assert val.names == expected_val
    assert train.names == sorted(set(names) - set(expected_val))
    again_train, again_val = split_train_val(dataset, 0.2, seed=0)
    assert (again_train.names, again_val.names) == (train.names, val.names)
    other_val = sorted(names[i] for i in np.random.RandomState(1).permutation(10)[:2])
    assert split_train_val(dataset, 0.2, seed=1)[1].names == other_val


def test_split_train_val_keeps_one_image_on_each_side(tmp_path):
    make_split(tmp_path, names=("a", "b"), size=(2, 2))
    dataset = load_split(tmp_path, "train")
    for fraction in (0.01, 0.5, 0.99):
        train, val = split_train_val(dataset, fraction, seed=3)
        assert len(train) == 1 and len(val) == 1
    with pytest.raises(ConfigError, match=r"data\.val_fraction"):
        split_train_val(dataset, 1.0, seed=0)


def test_build_datasets_with_and_without_test_split(tmp_path):
    make_split(tmp_path, "train", names=[f"t{i}" for i in range(5)], size=(2, 2))
    datasets = build_datasets(tmp_path)
    assert set(datasets) == {"train", "val", "test"}
    assert (len(datasets["train"]), len(datasets["val"]), datasets["test"]) == (4, 1, None)
    make_split(tmp_path, "test", names=("x",), size=(2, 2))
    make_split(tmp_path, "val", names=("v1", "v2"), size=(2, 2))
    datasets = build_datasets(tmp_path, val_split="val")
    assert (len(datasets["train"]), datasets["val"].names, datasets["test"].names) == (5, ["v1", "v2"], ["x"])


def test_build_datasets_defaults_to_synthetic_data():
    datasets = build_datasets(None)
    assert (len(datasets["train"]), len(datasets["val"]), len(datasets["test"])) == (19, 5, 8)
    sample = datasets["test"][0]
    assert sample.image.shape == (128, 128, 3) and sample.fov is not None


# ----------------------------------------------------------------------------- sampler


def constant_dataset(count, size=(8, 8)):
    """Samples whose image is the constant ``i`` so the sampler's choice of image can be read back."""
    mask = np.zeros(size, np.int64)
    mask[0, 0] = 1
    return [Sample(str(i), np.full(size + (1,), float(i), np.float32), mask.copy(), None) for i in range(count)]


def test_sampler_patch_batches_shapes_and_dtypes(tmp_path):
    make_split(tmp_path, names=("a", "b", "c"), size=(40, 50))
    sampler = TrainSampler(load_split(tmp_path, "train"), batch_size=2, patch_size=(16, 24))
    images, masks = next(sampler)
    assert images.shape == (2, 3, 16, 24) and images.dtype == np.float32
    assert masks.shape == (2, 16, 24) and masks.dtype == np.int64
    assert set(np.unique(masks)) <= {0, 1}
    assert sampler.epoch_length == 2


def test_sampler_resize_mode(tmp_path):
    make_split(tmp_path, names=("a",), size=(40, 50))
    images, masks = next(TrainSampler(load_split(tmp_path, "train", in_channels=1), 3, mode="resize", image_size=20))
    assert images.shape == (3, 1, 20, 20) and masks.shape == (3, 20, 20)
    assert set(np.unique(masks)) <= {0, 1}


def test_sampler_pads_small_images_evenly_with_zeros():
    image = np.arange(1, 1 + 5 * 7, dtype=np.float32).reshape(5, 7, 1)
    mask = np.ones((5, 7), np.int64)
    sampler = TrainSampler([Sample("s", image, mask, None)], 1, patch_size=9, flip=False)
    images, masks = next(sampler)
    assert images.shape == (1, 1, 9, 9)
    np.testing.assert_array_equal(images[0, 0, 2:7, 1:8], image[..., 0])  # pad 4 rows -> 2 + 2, 2 cols -> 1 + 1
    assert images.sum() == image.sum() and masks.sum() == 35


def test_every_image_once_per_epoch_and_full_batches():
    sampler = TrainSampler(constant_dataset(5), batch_size=2, patch_size=4, flip=False)
    assert sampler.epoch_length == 3
    for epoch in range(3):
        seen = [int(images[i, 0, 0, 0]) for images, _ in (next(sampler) for _ in range(3)) for i in range(2)]
        assert set(seen) == set(range(5)) and len(seen) == 6
        assert sampler.epoch == epoch


def test_foreground_bias_centres_patches_on_foreground():
    mask = np.zeros((64, 64), np.int64)
    mask[40:44, 40:44] = 1
    dataset = [Sample("fg", np.zeros((64, 64, 1), np.float32), mask, None)]
    biased = TrainSampler(dataset, 1, patch_size=16, foreground_bias=1.0, seed=0)
    uniform = TrainSampler(dataset, 1, patch_size=16, foreground_bias=0.0, seed=0)
    assert all(next(biased)[1].any() for _ in range(30))
    # A uniform 16 px crop of 64 px overlaps the 4 px square with probability (19/49)^2, about 15%.
    assert sum(next(uniform)[1].any() for _ in range(60)) < 25


def test_flips_and_rotations_are_dihedral_transforms():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    sampler = TrainSampler([Sample("d", image, np.zeros((4, 4), np.int64), None)], 1, patch_size=4, flip=True)
    base = image[..., 0]
    variants = [np.rot90(m, k) for m in (base, base.T) for k in range(4)]
    drawn = set()
    for _ in range(40):
        patch = next(sampler)[0][0, 0]
        matches = [i for i, v in enumerate(variants) if np.array_equal(patch, v)]
        assert len(matches) == 1
        drawn.add(matches[0])
    assert len(drawn) >= 6


def test_sampler_resume_draws_the_same_batches(tmp_path):
    make_split(tmp_path, names=[f"i{i}" for i in range(5)], size=(30, 30))
    dataset = load_split(tmp_path, "train")
    first = TrainSampler(dataset, batch_size=2, patch_size=16, seed=7)
    for _ in range(5):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # state survives a JSON round trip
    expected = [next(first) for _ in range(3)]
    resumed = TrainSampler(dataset, batch_size=2, patch_size=16, seed=999)
    resumed.load_state_dict(state)
    for (images, masks), (want_images, want_masks) in zip((next(resumed) for _ in range(3)), expected):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(masks, want_masks)
    assert resumed.epoch == first.epoch
    with pytest.raises(CheckpointError, match=r"saved for 5 images in batches of 2"):
        TrainSampler(dataset, batch_size=3).load_state_dict(state)


def test_sampler_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="empty dataset"):
        TrainSampler([], 2)
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        TrainSampler(constant_dataset(2), 0)
    with pytest.raises(ConfigError, match=r"data\.mode"):
        TrainSampler(constant_dataset(2), 1, mode="tile")
    save(tmp_path / "u" / "images" / "u.png", rgb())
    with pytest.raises(DataError, match="training needs masks"):
        TrainSampler(load_split(tmp_path, "u", require_masks=False), 1)


# ----------------------------------------------------------------------------- synthetic data


def folder_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_synthetic_is_byte_identical_for_one_seed(tmp_path):
    first = folder_bytes(generate_synthetic(tmp_path / "a", n_train=2, n_test=1, size=128, seed=3))
    second = folder_bytes(generate_synthetic(tmp_path / "b", n_train=2, n_test=1, size=128, seed=3))
    other = folder_bytes(generate_synthetic(tmp_path / "c", n_train=2, n_test=1, size=128, seed=4))
    layout = (("test", ["02"]), ("train", ["00", "01"]))
    kinds = ("fov", "images", "masks")
    assert sorted(first) == [f"{split}/{kind}/{n}.png" for split, names in layout for kind in kinds for n in names]
    assert first == second
    assert first["train/images/00.png"] != other["train/images/00.png"]


def test_synthetic_root_layout_vessel_fraction_and_threshold_difficulty():
    root = synthetic_root()
    assert root.name == "synthetic_vessels_v1" and root.parent == Path(os.environ["JMEDSEG_CACHE"])
    train, test = load_split(root, "train", cache=False), load_split(root, "test", cache=False)
    assert (len(train), len(test)) == (24, 8)
    fg_hist, bg_hist = np.zeros(256), np.zeros(256)
    for name in test.names:
        image = np.asarray(Image.open(root / "test" / "images" / f"{name}.png"))
        mask = np.asarray(Image.open(root / "test" / "masks" / f"{name}.png")) > 0
        fov = np.asarray(Image.open(root / "test" / "fov" / f"{name}.png")) > 0
        assert image.shape == (128, 128, 3) and not (mask & ~fov).any()
        assert 0.08 <= mask.mean() <= 0.15
        assert image[~fov].mean() < 20 < image[fov].mean()
        green = image[..., 1]
        fg_hist += np.bincount(green[mask], minlength=256)
        bg_hist += np.bincount(green[fov & ~mask], minlength=256)
    # Best "green <= t" threshold over all t: vessels are darker, but a global threshold is mediocre.
    true_pos, false_pos = np.cumsum(fg_hist), np.cumsum(bg_hist)
    best_dice = np.max(2 * true_pos / (true_pos + false_pos + fg_hist.sum()))
    assert 0.2 < best_dice < 0.6


def test_synthetic_root_is_reused_and_a_lost_race_uses_the_winner(monkeypatch):
    root = synthetic_root()
    stamp = (root / "train" / "images" / "00.png").stat().st_mtime_ns
    assert synthetic_root() == root
    assert (root / "train" / "images" / "00.png").stat().st_mtime_ns == stamp

    other_cache = root.parent / "race"
    monkeypatch.setenv("JMEDSEG_CACHE", str(other_cache))
    real_generate = synthetic_module.generate_synthetic

    def generate_while_another_process_finishes(out_dir, *args):
        real_generate(out_dir, 1, 0, 16, 0)
        winner = other_cache / "synthetic_vessels_v1"
        (winner / "marker").mkdir(parents=True)
        return out_dir

    monkeypatch.setattr(synthetic_module, "generate_synthetic", generate_while_another_process_finishes)
    assert synthetic_root() == other_cache / "synthetic_vessels_v1"
    assert [p.name for p in other_cache.iterdir()] == ["synthetic_vessels_v1"]  # staging folder removed
    assert (other_cache / "synthetic_vessels_v1" / "marker").is_dir()


def test_synthetic_root_in_an_unwritable_place(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("JMEDSEG_CACHE", str(blocker / "cache"))
    with pytest.raises(DataError, match=r"a_file/cache: cannot write the synthetic dataset .*set JMEDSEG_CACHE"):
        synthetic_root()


# ----------------------------------------------------------------------------- real data


def test_real_drive_splits_load(drive_root):
    for split, first in (("train", "21"), ("test", "01")):
        dataset = load_split(drive_root, split)
        assert len(dataset) == 20 and dataset.names[0] == first and dataset.has_fov
        for sample in dataset:
            assert sample.image.shape == (584, 565, 3) and sample.mask.shape == (584, 565)
            assert set(np.unique(sample.mask)) == {0, 1} and 0.04 < sample.mask.mean() < 0.15
            assert 0.5 < sample.fov.mean() < 0.8
