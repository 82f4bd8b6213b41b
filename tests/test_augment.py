"""Tests of jmedseg.augment and its use by the data layer: joint geometry, photometric ops, specs, seeding."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jmedseg import augment as aug
from jmedseg.augment import OPS, PRESETS, SAS_PIPELINE, Pipeline, resolve_ops
from jmedseg.data import Sample, TrainSampler, load_split
from jmedseg.data.dataset import standardise
from jmedseg.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
LABELS = (0, 2, 5)


def block_sample(height=48, width=40, block=8, seed=0):
    """Labels from LABELS in ``block``-pixel squares; the image encodes the label one-hot in its channels.

    A pixel whose (bilinear) image value is exactly the one-hot colour of a label was interpolated
    only from pixels of that label, so the nearest-neighbour mask must hold that label there.
    """
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(LABELS), (-(-height // block), -(-width // block)))
    index = np.kron(blocks, np.ones((block, block), np.int64))[:height, :width]
    image = np.zeros((height, width, 3), np.uint8)
    for channel in range(3):
        image[index == channel, channel] = 255
    mask = np.asarray(LABELS)[index].astype(np.int64)
    return image, mask, np.ones((height, width), bool)


def far_outside(fov):
    """Pixels more than one pixel away from the FOV (their bilinear image value has no inside source)."""
    return ~cv2.dilate(fov.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def one_hot_agreement(image, mask):
    """(fraction of pixels with an exact one-hot colour, whether the mask agrees at all of them)."""
    agrees, exact = True, np.zeros(mask.shape, bool)
    for channel, label in enumerate(LABELS):
        colour = np.zeros(3, np.uint8)
        colour[channel] = 255
        here = np.all(image == colour, axis=2)
        exact |= here
        agrees &= bool(np.all(mask[here] == label))
    return exact.mean(), agrees


GEOMETRIC_ENTRIES = [
    {"name": "hflip"},
    {"name": "vflip"},
    {"name": "rot90"},
    {"name": "rotate", "limit": 40},
    {"name": "rotate", "limit": 40, "border": "constant"},
    {"name": "affine", "rotate": 30, "scale": [0.7, 1.4], "translate": 0.2, "shear": 15},
    {"name": "affine", "rotate": 30, "scale": [0.7, 1.4], "translate": 0.2, "shear": 15, "border": "constant"},
    {"name": "elastic", "alpha": [3, 5], "sigma": [4, 8]},
    {"name": "perspective", "scale": [0.05, 0.15], "border": "constant"},
    {"name": "crop", "size": [24, 32]},
    {"name": "crop", "size": 56},
]


@pytest.mark.parametrize("entry", GEOMETRIC_ENTRIES, ids=lambda e: "-".join(str(v) for v in e.values())[:40])
def test_geometric_ops_move_image_mask_and_fov_together(entry):
    image, mask, fov = block_sample()
    pipeline = Pipeline([{**entry, "p": 1.0}], seed=1)
    for _ in range(4):
        out_image, out_mask, out_fov = pipeline(image, mask, fov)
        assert out_image.dtype == np.uint8 and out_mask.dtype == np.int64 and out_fov.dtype == bool
        assert out_image.shape[:2] == out_mask.shape == out_fov.shape
        assert set(np.unique(out_mask)) <= set(LABELS)
        exact, agrees = one_hot_agreement(out_image, out_mask)
        assert agrees and exact > 0.15
        # Pixels brought in from outside the image are outside the FOV, and background (and black
        # away from the FOV edge) when the border is constant; crop pads with 0.
        if entry.get("border") == "constant" or entry["name"] == "crop":
            assert np.all(out_mask[~out_fov] == 0) and np.all(out_image[far_outside(out_fov)] == 0)


def test_rotation_moves_the_fov_border_inwards():
    image, mask, fov = block_sample(40, 40)
    matrix = aug.affine_matrix(image.shape, angle=45)
    out_image, out_mask, out_fov = aug.warp_affine(image, mask.astype(np.uint8), fov, matrix, "reflect")
    assert not out_fov[0, 0] and not out_fov[-1, -1] and out_fov[20, 20]
    assert out_image[0, 0].any()  # reflected content, not black
    assert out_fov.sum() < 0.9 * fov.sum()


def test_quarter_turn_by_matrix_and_by_rot90_equal_numpy_rot90():
    image, mask, fov = block_sample(16, 16)
    mask8 = mask.astype(np.uint8)
    by_matrix = aug.warp_affine(image, mask8, fov, aug.affine_matrix(image.shape, angle=90))
    by_rot90 = aug.rot90(image, mask8, fov, 1)
    for out_image, out_mask, out_fov in (by_matrix, by_rot90):
        np.testing.assert_array_equal(out_image, np.rot90(image, 1))
        np.testing.assert_array_equal(out_mask, np.rot90(mask8, 1))
        assert out_fov.all()
    tall = np.zeros((6, 4, 1), np.uint8)
    assert aug.rot90(tall, None, None, 3)[0].shape == (4, 6, 1)


def test_translation_and_identity_transforms():
    image, mask, fov = block_sample(24, 24)
    mask8 = mask.astype(np.uint8)
    shifted = aug.warp_affine(image, mask8, fov, aug.affine_matrix(image.shape, translate=(3, 0)), "constant")
    np.testing.assert_array_equal(shifted[1][:, 3:], mask8[:, :-3])
    assert not shifted[2][:, :3].any() and shifted[2][:, 3:].all()
    still = Pipeline([{"name": "elastic", "p": 1, "alpha": 0}], seed=0)(image, mask, fov)
    np.testing.assert_array_equal(still[0], image)
    np.testing.assert_array_equal(still[1], mask)


def test_elastic_field_has_the_requested_rms_and_smoothness():
    dx, dy = aug.elastic_field(np.random.default_rng(0), (200, 160), alpha=3.0, sigma=10.0)
    assert dx.shape == dy.shape == (200, 160) and dx.dtype == np.float32
    assert np.sqrt(np.mean(dx**2)) == pytest.approx(3.0, rel=1e-3)
    assert np.sqrt(np.mean(dy**2)) == pytest.approx(3.0, rel=1e-3)
    # Smooth: neighbouring displacements differ far less than the displacements themselves.
    assert np.abs(np.diff(dx, axis=1)).mean() < 0.2 * np.abs(dx).mean()


def test_crop_pads_a_small_image_evenly():
    image = np.full((4, 6, 1), 9, np.uint8)
    out_image, out_mask, out_fov = Pipeline([{"name": "crop", "size": [7, 6]}], seed=0)(
        image, np.ones((4, 6), np.int64), np.ones((4, 6), bool)
    )
    assert out_image.shape == (7, 6, 1)
    assert out_fov[:, 0].tolist() == [False, True, True, True, True, False, False]  # 3 rows: 1 before, 2 after
    assert out_mask.sum() == 24 and out_image.sum() == 9 * 24


PHOTOMETRIC_ENTRIES = [
    {"name": "brightness", "limit": 0.3},
    {"name": "contrast", "range": [0.3, 0.5]},
    {"name": "gamma", "range": [2.0, 3.0]},
    {"name": "hue_saturation", "hue": 90, "saturation": [0.2, 0.4]},
    {"name": "blur", "sigma": [1.5, 2.5]},
    {"name": "noise", "std": [10, 20]},
    {"name": "jpeg", "quality": [5, 10]},
    {"name": "clahe", "clip_limit": [4, 8], "tiles": 4},
]


def textured_rgb(height=48, width=40, seed=0):
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), 2)
    return np.clip(60 + 1.5 * (smooth - smooth.mean()) + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("entry", PHOTOMETRIC_ENTRIES, ids=lambda e: e["name"])
def test_photometric_ops_change_only_the_image(entry):
    image = textured_rgb()
    mask = (np.arange(48 * 40).reshape(48, 40) % 3).astype(np.int64)
    fov = np.arange(48 * 40).reshape(48, 40) % 2 == 0
    out_image, out_mask, out_fov = Pipeline([{**entry, "p": 1.0}], seed=0)(image, mask, fov)
    assert out_image.shape == image.shape and out_image.dtype == np.uint8
    assert np.abs(out_image.astype(int) - image).mean() > 1.0
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out_fov, fov)
    assert out_mask.dtype == np.int64


def test_photometric_values_by_hand():
    ramp = np.array([[[0], [64], [100], [200], [250]]], np.uint8)
    np.testing.assert_array_equal(aug.adjust_brightness(ramp, 10)[0, :, 0], [10, 74, 110, 210, 255])
    np.testing.assert_array_equal(aug.adjust_gamma(ramp, 2.0)[0, :, 0], [0, 16, 39, 157, 245])
    two = np.array([[[100], [200]]], np.uint8)
    np.testing.assert_array_equal(aug.adjust_contrast(two, 0.5)[0, :, 0], [125, 175])
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_array_equal(aug.adjust_hue_saturation(red, 120, 1.0)[0, 0], [0, 255, 0])
    np.testing.assert_array_equal(aug.adjust_hue_saturation(red, 0, 0.0)[0, 0], [255, 255, 255])
    gray = textured_rgb()[:, :, :1]
    assert aug.adjust_hue_saturation(gray, 90, 0.0) is gray  # gray images have no hue or saturation
    assert aug.gaussian_blur(gray, 0) is gray


def test_noise_blur_jpeg_and_clahe_behave_as_documented():
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = aug.gaussian_noise(flat, 10.0, np.random.default_rng(0)).astype(np.float64)
    assert noisy.std() == pytest.approx(10.0, rel=0.05) and noisy.mean() == pytest.approx(128, abs=0.5)
    dot = np.zeros((21, 21, 1), np.uint8)
    dot[10, 10] = 255
    blurred = aug.gaussian_blur(dot, 2.0)
    assert blurred[10, 10, 0] < 255 and blurred[10, 12, 0] > 0 and blurred.sum() == pytest.approx(255, rel=0.1)
    image = textured_rgb()
    error = {q: np.abs(aug.jpeg_compress(image, q).astype(int) - image).mean() for q in (10, 95)}
    assert error[10] > error[95]
    low_contrast = (100 + textured_rgb()[:, :, :1] // 8).astype(np.uint8)
    assert aug.apply_clahe(low_contrast, 4.0, 4).std() > 2 * low_contrast.std()


def test_screen_photo_warps_mask_and_fov_with_the_screen():
    image = np.full((60, 50, 3), 200, np.uint8)
    mask, fov = np.ones((60, 50), np.uint8), np.ones((60, 50), bool)
    rng = np.random.default_rng(3)
    out_image, out_mask, out_fov = aug.screen_photo(image, mask, fov, rng, perspective=0.2, noise=0.0, blur=0.0)
    assert not out_fov.all() and out_fov[30, 25]
    np.testing.assert_array_equal(out_mask.astype(bool), out_fov)  # the surround is background and outside
    assert far_outside(out_fov).any() and np.all(out_image[far_outside(out_fov)] == 0)  # black surround
    screen = out_image[out_fov].astype(float)
    assert screen.std() > 3  # moire bands and colour cast on a flat image


def test_same_seed_same_output_and_state_round_trip():
    image, mask, fov = textured_rgb(), (np.arange(48 * 40).reshape(48, 40) % 2), np.ones((48, 40), bool)
    first, second, other = Pipeline("sas", seed=5), Pipeline("sas", seed=5), Pipeline("sas", seed=6)
    outputs = []
    for _ in range(6):
        a, b, c = first(image, mask, fov), second(image, mask, fov), other(image, mask, fov)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        outputs.append((a[0], c[0]))
    assert any(not np.array_equal(a, c) for a, c in outputs)
    state = first.state_dict()
    expected = first(image, mask, fov)
    first.load_state_dict(state)
    for x, y in zip(first(image, mask, fov), expected):
        np.testing.assert_array_equal(x, y)


def test_probability_zero_and_one():
    image, mask, fov = block_sample()
    never = Pipeline([{"name": "hflip", "p": 0}, {"name": "noise", "p": 0.0}], seed=0)
    always = Pipeline([{"name": "hflip", "p": 1}], seed=0)
    for _ in range(5):
        np.testing.assert_array_equal(never(image, mask, fov)[0], image)
        np.testing.assert_array_equal(always(image, mask, fov)[0], image[:, ::-1])


def test_gray_and_float_images():
    gray = textured_rgb()[:, :, :1].astype(np.float32) * 0.9 + 0.4  # 16-bit sources arrive as float32 in 0..255
    out = Pipeline("sas", seed=0)(gray)
    assert out[0].shape == gray.shape and out[0].dtype == np.uint8 and out[1] is None and out[2] is None


# ----------------------------------------------------------------------------- specs and errors


def error_of(spec, **kwargs):
    with pytest.raises(ConfigError) as info:
        Pipeline(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_resolve_fills_defaults_and_normalises():
    ops = resolve_ops([{"name": "gamma", "p": 0.3, "range": 1.2}, {"name": "rotate"}, {"name": "crop", "size": 8}])
    assert ops == [
        {"name": "gamma", "p": 0.3, "range": [1.2, 1.2]},
        {"name": "rotate", "p": 0.5, "limit": 30.0, "border": "reflect"},
        {"name": "crop", "p": 1.0, "size": [8, 8]},
    ]
    assert all(set(op) == {"name", "p", *OPS[op["name"]].params} for op in resolve_ops("sas"))


@pytest.mark.parametrize(
    "spec, expected",
    [
        ([{"name": "rotat"}], "data.augment: entry 1: unknown augmentation 'rotat' (did you mean 'rotate'?)"),
        ([{"name": "zzz"}], "unknown augmentation 'zzz' (known: hflip, vflip"),
        ([{"name": "hflip"}, {"name": "gamma", "rnage": [1, 2]}],
         "data.augment: entry 2 (gamma): unknown argument 'rnage' (did you mean 'range'?)"),
        ([{"name": "gamma", "p": 1.5}], "entry 1 (gamma): 'p' must be a probability in [0, 1], got 1.5"),
        ([{"name": "gamma", "range": [1.5, 0.7]}], "'range' must be a number or a [low, high] pair with 0.05 <= low"),
        ([{"name": "rotate", "limit": 200}], "'limit' must be a number in [0, 180], got 200"),
        ([{"name": "rotate", "border": "wrap"}], "'border' must be one of reflect, constant, got 'wrap'"),
        ([{"name": "jpeg", "quality": [10.5, 20]}], "'quality' must be an integer or a [low, high] pair"),
        ([{"name": "crop"}], "entry 1 (crop): missing required argument 'size'"),
        ([{"name": "crop", "size": [0, 4]}], "'size' must be a positive integer or a [height, width] pair"),
        (["rotate"], "entry 1 must be a mapping like {name: rotate, p: 0.5}, got 'rotate'"),
        ([{"p": 0.5}], "entry 1 needs a 'name'"),
        ("sass", "data.augment: 'sass' is neither a preset nor a .yaml/.yml file (did you mean 'sas'?)"),
        (3, "data.augment: must be a preset name, a .yaml file or a list of ops, got 3 (int)"),
    ],
)
def test_spec_errors_name_the_entry_and_suggest(spec, expected):
    assert expected in error_of(spec, source="data.augment")


def test_pipeline_files(tmp_path):
    listed = tmp_path / "ops.yaml"
    listed.write_text("- {name: rotate, p: 0.5, limit: 10}\n- {name: gamma}\n")
    assert [op["name"] for op in resolve_ops(str(listed))] == ["rotate", "gamma"]
    fragment = tmp_path / "fragment.yml"
    fragment.write_text("data:\n  augment:\n    - {name: blur, sigma: 2}\n")
    assert resolve_ops(str(fragment)) == [{"name": "blur", "p": 0.5, "sigma": [2.0, 2.0]}]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: blur, sigmaa: 2}\n")
    assert error_of(str(bad)) == f"{bad}: entry 1 (blur): unknown argument 'sigmaa' (did you mean 'sigma'?)"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("name: blur\n")
    assert "expected a list of ops" in error_of(str(mapping))
    assert error_of(str(tmp_path / "missing.yaml")) == f"{tmp_path / 'missing.yaml'}: augmentation file not found"
    broken = tmp_path / "broken.yaml"
    broken.write_text("- {name: blur\n")
    assert error_of(str(broken)).startswith(f"{broken}: invalid YAML at line")


def test_sas_preset_matches_the_shipped_yaml():
    assert resolve_ops(str(REPO_ROOT / "configs" / "augment" / "sas.yaml")) == resolve_ops("sas")
    assert PRESETS["sas"] is SAS_PIPELINE


def test_sas_preset_reaches_severity_4_of_the_corruptions_that_cost_most():
    from jmedseg.corruptions import _LEVELS

    ops = {op["name"]: op for op in resolve_ops("sas")}
    severity_4 = {name: levels[3] for name, levels in _LEVELS.items()}
    assert ops["noise"]["std"][1] >= severity_4["noise"]
    assert ops["jpeg"]["quality"][0] <= severity_4["jpeg"]
    assert ops["blur"]["sigma"][1] >= severity_4["blur"]
    for strength in ("perspective", "moire", "blur", "noise"):
        assert ops["screen_photo"][strength][1] >= severity_4["screen_photo"][strength], strength


def test_bad_arrays_are_data_errors():
    pipeline = Pipeline([], seed=0)
    with pytest.raises(DataError, match=r"8-bit range \[0, 255\] \(the raw image, not the standardised one\)"):
        pipeline(np.full((4, 4, 3), -0.5, np.float32))
    with pytest.raises(DataError, match="C = 1 or 3"):
        pipeline(np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"mask shape \(4, 5\) does not match image shape \(4, 4\)"):
        pipeline(np.zeros((4, 4, 1), np.uint8), np.zeros((4, 5), np.int64))
    with pytest.raises(DataError, match=r"class indices in 0..255, got \[0, 300\]"):
        pipeline(np.zeros((2, 2, 1), np.uint8), np.array([[0, 300], [0, 0]]))


# ----------------------------------------------------------------------------- data layer


def write_split(root, count=3, size=(40, 48), **options):
    rng = np.random.default_rng(0)
    for i in range(count):
        for folder in ("images", "masks", "fov"):
            (root / "train" / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / "images" / f"{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "train" / "masks" / f"{i}.png"), (rng.random(size) > 0.7).astype(np.uint8) * 255)
        fov = np.zeros(size, np.uint8)
        fov[4:-4, 4:-4] = 255
        cv2.imwrite(str(root / "train" / "fov" / f"{i}.png"), fov)
    return load_split(root, "train", **options)


def test_raw_sample_standardises_to_the_indexed_sample(tmp_path):
    dataset = write_split(tmp_path)
    raw, standard = dataset.raw(1), dataset[1]
    assert raw.image.dtype == np.uint8 and raw.mask.dtype == np.int64 and raw.fov.dtype == bool
    np.testing.assert_array_equal(standardise(raw.image, raw.fov), standard.image)
    np.testing.assert_array_equal(raw.mask, standard.mask)
    np.testing.assert_array_equal(dataset.source(1).image, raw.image)  # no preprocessing: source is raw
    raw.image[:] = 0  # a fresh copy: the cache is untouched
    assert dataset.raw(1).image.any()


def test_source_sample_is_the_image_before_preprocessing(tmp_path):
    dataset = write_split(tmp_path, in_channels=1, preprocess="green_clahe")
    source, raw = dataset.source(1), dataset.raw(1)
    assert source.image.shape == (40, 48, 3) and raw.image.shape == (40, 48, 1)
    np.testing.assert_array_equal(dataset.apply_preprocess(source.image), raw.image)
    np.testing.assert_array_equal(source.mask, raw.mask)
    source.image[:] = 0
    assert dataset.source(1).image.any()


def test_sampler_augments_before_preprocessing(tmp_path):
    # Desaturating sets every channel to max(R, G, B); green_clahe then sees that, not the green
    # channel. After preprocessing (one channel) the same op would change nothing.
    dataset = write_split(tmp_path, in_channels=1, preprocess="green_clahe")
    gray = [{"name": "hue_saturation", "p": 1.0, "hue": 0, "saturation": [0.0, 0.0]}]
    sampler = TrainSampler(dataset, 1, patch_size=(40, 48), foreground_bias=0.0, flip=False, seed=0, augment=gray)
    images, masks = next(sampler)
    index = int(np.random.default_rng(0).permutation(len(dataset))[0])
    source = dataset.source(index)
    brightest = np.repeat(source.image.max(axis=2, keepdims=True), 3, axis=2)
    expected = standardise(dataset.apply_preprocess(brightest), source.fov)
    assert images.shape == (1, 1, 40, 48)
    np.testing.assert_allclose(images[0, 0], expected[:, :, 0], atol=1e-5)
    np.testing.assert_array_equal(masks[0], source.mask)
    assert np.abs(images[0, 0] - dataset[index].image[:, :, 0]).mean() > 0.1


def test_sampler_with_an_empty_pipeline_draws_the_usual_batches(tmp_path):
    dataset = write_split(tmp_path)
    plain = TrainSampler(dataset, 2, patch_size=16, seed=3)
    empty = TrainSampler(dataset, 2, patch_size=16, seed=3, augment=[])
    for _ in range(3):
        for x, y in zip(next(plain), next(empty)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mode", ["patch", "resize"])
def test_sampler_augments_and_resumes(tmp_path, mode):
    dataset = write_split(tmp_path)
    sampler = TrainSampler(dataset, 2, mode=mode, patch_size=16, image_size=24, seed=1, augment="sas")
    images, masks = next(sampler)
    side = 16 if mode == "patch" else 24
    assert images.shape == (2, 3, side, side) and images.dtype == np.float32
    assert masks.shape == (2, side, side) and set(np.unique(masks)) <= {0, 1}
    state = sampler.state_dict()
    expected = [next(sampler) for _ in range(2)]
    resumed = TrainSampler(dataset, 2, mode=mode, patch_size=16, image_size=24, seed=99, augment="sas")
    resumed.load_state_dict(state)
    for batch, again in zip(expected, (next(resumed) for _ in range(2))):
        for x, y in zip(batch, again):
            np.testing.assert_array_equal(x, y)


def test_sampler_augmentation_needs_raw_images():
    samples = [Sample("a", np.zeros((8, 8, 1), np.float32), np.zeros((8, 8), np.int64), None)]
    with pytest.raises(DataError, match="data.augment needs the 8-bit source images of a SegDataset"):
        TrainSampler(samples, 1, patch_size=4, augment="sas")
    with pytest.raises(ConfigError, match="data.augment: entry 1: unknown augmentation 'flip'"):
        TrainSampler(samples, 1, patch_size=4, augment=[{"name": "flip"}])


# ----------------------------------------------------------------------------- tools


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_show_aug_writes_a_grid_of_the_requested_size(tmp_path, capsys):
    write_split(tmp_path / "data", count=3)
    out = tmp_path / "grid.png"
    show_aug = load_tool("show_aug")
    argv = ["--data", str(tmp_path / "data"), "--images", "2", "--samples", "3", "--cell", "32", "--out", str(out)]
    assert show_aug.main(argv) == 0
    grid = cv2.imread(str(out))
    assert grid.shape == (2 * 32, 4 * 32, 3)
    assert str(out) in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--out: expected a .png path"):
        show_aug.main(["--out", str(tmp_path / "grid.jpg")])


def test_aug_speed_reports_every_op(capsys):
    assert load_tool("aug_speed").main(["--size", "64", "--repeats", "1", "--warmup", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == 64 and report["threads"] == 1
    assert set(report["images_per_s"]) == {*OPS, "sas", "standardise"}
    assert all(rate > 0 for rate in report["images_per_s"].values())
