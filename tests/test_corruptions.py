"""Tests of jmedseg.corruptions: determinism, alignment, severity order, benchmark plumbing, errors."""
import cv2
import numpy as np
import pytest

from jmedseg.corruptions import (
    CORRUPTIONS,
    GEOMETRIC_CORRUPTIONS,
    SEVERITIES,
    CorruptedDataset,
    corrupt,
    format_benchmark,
    parse_corruptions,
    parse_severities,
    run_benchmark,
)
from jmedseg.data import Sample, load_split
from jmedseg.data.dataset import standardise
from jmedseg.errors import ConfigError, DataError
from jmedseg.metrics import dice

PHOTOMETRIC = [name for name in CORRUPTIONS if name not in GEOMETRIC_CORRUPTIONS]


def smooth_sample(name="img", size=(56, 64), seed=0, with_fov=True):
    """A colourful low-frequency image with fine texture, a mask of two classes and a disc FOV."""
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.uniform(40, 215, (4, 5, 3)).astype(np.float32), size[::-1], interpolation=cv2.INTER_CUBIC)
    image = np.clip(low + rng.normal(0, 6, low.shape), 0, 255).astype(np.uint8)
    mask = np.zeros(size, np.int64)
    mask[10:30, 12:40] = 1
    mask[35:50, 30:60] = 2
    fov = None
    if with_fov:
        yy, xx = np.mgrid[: size[0], : size[1]]
        fov = (yy - size[0] / 2) ** 2 + (xx - size[1] / 2) ** 2 < (0.48 * min(size)) ** 2 * 1.4
    return Sample(name, image, mask, fov)


def change(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_the_table_has_every_effect_at_five_severities():
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert set(GEOMETRIC_CORRUPTIONS) < set(CORRUPTIONS)
    assert {"blur", "noise", "jpeg", "gamma", "hue_saturation", "clahe", "screen_photo", "elastic",
            "perspective", "rotate"} <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_deterministic_and_keep_shapes_and_labels(name):
    sample = smooth_sample()
    for severity in (1, 5):
        first, again = corrupt(sample, name, severity, seed=3), corrupt(sample, name, severity, seed=3)
        for x, y in zip(first[1:], again[1:]):
            np.testing.assert_array_equal(x, y)
        assert first.name == "img" and first.image.shape == sample.image.shape and first.image.dtype == np.uint8
        assert first.mask.dtype == np.int64 and set(np.unique(first.mask)) <= {0, 1, 2}
        assert first.fov.dtype == bool and first.fov.shape == sample.fov.shape
    np.testing.assert_array_equal(sample.image, smooth_sample().image)  # the input is not modified


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_corruptions_change_only_the_image(name):
    sample = smooth_sample(with_fov=False)
    out = corrupt(sample, name, 4, seed=0)
    assert change(out.image, sample.image) > 0.5
    np.testing.assert_array_equal(out.mask, sample.mask)
    assert out.fov is None


@pytest.mark.parametrize("name", GEOMETRIC_CORRUPTIONS)
def test_geometric_corruptions_always_return_a_fov_of_valid_pixels(name):
    out = corrupt(smooth_sample(with_fov=False), name, 5, seed=0)
    assert out.fov is not None and out.fov.any()
    assert np.all(out.mask[~out.fov] == 0)
    if name != "scale":  # zooming in may keep every pixel inside
        assert not out.fov.all()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_higher_severity_changes_the_image_more(name):
    sample = smooth_sample(with_fov=False)
    changes = [change(corrupt(sample, name, severity, seed=1).image, sample.image) for severity in SEVERITIES]
    assert changes[0] < changes[4]
    if name in ("brightness", "contrast", "gamma", "blur", "noise", "jpeg", "rotate", "shear"):
        assert changes == sorted(changes)


def test_the_random_part_depends_on_seed_and_image_name_not_on_severity():
    sample = smooth_sample()
    noise = {seed: corrupt(sample, "noise", 2, seed=seed).image for seed in (0, 1)}
    assert not np.array_equal(noise[0], noise[1])
    renamed = corrupt(sample._replace(name="other"), "noise", 2, seed=0).image
    assert not np.array_equal(noise[0], renamed)
    # Same draw at every severity: the noise of severity 4 is that of severity 2 scaled by 24 / 8.
    flat = Sample("flat", np.full((40, 40, 3), 128, np.uint8), None, None)
    mild = corrupt(flat, "noise", 2, seed=0).image.astype(float) - 128
    strong = corrupt(flat, "noise", 4, seed=0).image.astype(float) - 128
    assert np.corrcoef(mild.ravel(), strong.ravel())[0, 1] > 0.99
    assert strong.std() == pytest.approx(3 * mild.std(), rel=0.05)


@pytest.mark.parametrize("name", GEOMETRIC_CORRUPTIONS)
def test_a_perfect_segmenter_stays_perfect_under_geometric_corruptions(name):
    # The image shows the mask itself, so thresholding the corrupted image is a perfect model
    # exactly when the benchmark moves mask and FOV with the image.
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (24, 30), 12, 1, -1)
    cv2.rectangle(mask, (40, 8), (58, 50), 1, -1)
    mask = mask.astype(np.int64)
    image = np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    for severity in SEVERITIES:
        out = corrupt(Sample("shapes", image, mask, None), name, severity, seed=2)
        predicted = out.image.mean(axis=2) > 127
        assert dice(predicted, out.mask, fov=out.fov) > 0.93, (name, severity)
        assert 0 < out.mask.sum() < out.fov.sum()


def write_split(root, count=3, size=(48, 56)):
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "masks").mkdir(parents=True)
    for i in range(count):
        sample = smooth_sample(size=size, seed=i, with_fov=False)
        binary = (sample.mask > 0).astype(np.uint8)
        shown = np.repeat(binary[:, :, None] * 255, 3, axis=2)  # the image shows its mask
        cv2.imwrite(str(root / "test" / "images" / f"{i}.png"), shown)
        cv2.imwrite(str(root / "test" / "masks" / f"{i}.png"), binary * 255)
    return load_split(root, "test")


def test_corrupted_dataset_is_standardised_and_benchmark_tabulates(tmp_path):
    dataset = write_split(tmp_path)
    corrupted = CorruptedDataset(dataset, "rotate", 3, seed=0)
    assert len(corrupted) == 3
    item = corrupted[0]
    assert item.image.dtype == np.float32 and abs(float(item.image[item.fov].mean())) < 1e-4
    np.testing.assert_array_equal(item.mask, corrupt(dataset.raw(0), "rotate", 3, seed=0).mask)

    def perfect_dice(samples):
        # Standardised images are positive exactly on the (bright) mask.
        return float(np.mean([dice(s.image.mean(axis=2) > 0, s.mask, fov=s.fov) for s in samples]))

    table, mean = run_benchmark(dataset, perfect_dice, ["rotate", "elastic", "brightness"], [1, 5])
    assert list(table) == ["rotate", "elastic", "brightness"] and all(list(row) == [1, 5] for row in table.values())
    assert all(value > 0.93 for row in table.values() for value in row.values())
    assert mean == pytest.approx(np.mean([v for row in table.values() for v in row.values()]))
    text = format_benchmark(table, mean)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[1].split() == ["corruption", "1", "5", "mean"]
    assert lines[2].startswith("rotate") and lines[-1].startswith("mean")
    assert f"{mean:.4f}" in lines[-1]


def test_corruptions_hit_the_image_as_captured_then_the_preprocessing(tmp_path):
    # green_clahe keeps one channel: a hue shift of the stored RGB image moves colour into or out of
    # green, which a hue shift of the preprocessed image could not (it has no hue).
    folder = tmp_path / "test" / "images"
    folder.mkdir(parents=True)
    for i in range(2):
        image = smooth_sample(seed=i).image
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    dataset = load_split(tmp_path, "test", in_channels=1, preprocess="green_clahe", require_masks=False)
    for name in ("hue_saturation", "noise"):
        item = CorruptedDataset(dataset, name, 4, seed=0)[1]
        corrupted = corrupt(dataset.source(1), name, 4, seed=0)
        assert corrupted.image.shape[2] == 3 and item.image.shape == (56, 64, 1)
        np.testing.assert_array_equal(item.image, standardise(dataset.apply_preprocess(corrupted.image), item.fov))
        assert change(item.image, dataset[1].image) > 0.05


def test_errors():
    sample = smooth_sample()
    with pytest.raises(ConfigError, match=r"corruption 'blurr' is unknown \(did you mean 'blur'\?\)"):
        corrupt(sample, "blurr", 1)
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity must be an integer from 1 to 5"):
            corrupt(sample, "blur", severity)
    standardised = sample._replace(image=sample.image.astype(np.float32) / 50 - 2)
    with pytest.raises(DataError, match="8-bit range"):
        corrupt(standardised, "blur", 1)
    with pytest.raises(DataError, match="8-bit source images of a SegDataset"):
        CorruptedDataset([sample], "blur", 1)


def test_parse_command_line_lists():
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_corruptions("noise, blur,noise") == ["noise", "blur"]
    with pytest.raises(ConfigError, match=r"--corruptions: corruption 'nosie' is unknown \(did you mean 'noise'\?\)"):
        parse_corruptions("blur,nosie")
    with pytest.raises(ConfigError, match="--corruptions: empty name"):
        parse_corruptions("blur,")
    assert parse_severities("5,1,3,3") == [1, 3, 5]
    for text in ("0", "6", "a", "1,,2", "-1"):
        with pytest.raises(ConfigError, match="--severities: expected integers from 1 to 5"):
            parse_severities(text)
