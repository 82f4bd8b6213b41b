"""Tests of tools/prepare_data.py on tiny fake DRIVE and Kvasir-SEG release layouts."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jmedseg.data import load_split

TOOL = Path(__file__).resolve().parent.parent / "tools" / "prepare_data.py"
_spec = importlib.util.spec_from_file_location("prepare_data", TOOL)
prepare_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_data)


def pixels(seed, height=5, width=6):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def vessel_mask(seed, height=5, width=6):
    return (np.random.default_rng(seed).random((height, width)) > 0.7).astype(np.uint8) * 255


def palette_gif(path, mask, colours=((0, 0, 0), (255, 255, 255))):
    """Write a two-colour palette GIF like DRIVE's manual and FOV masks."""
    image = Image.fromarray((mask > 0).astype(np.uint8), mode="P")
    image.putpalette([c for colour in colours for c in colour] + [0] * (768 - 6))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def fake_drive(src):
    for folder, tag, numbers in (("training", "training", ("21", "22")), ("test", "test", ("01",))):
        for number in numbers:
            seed = int(number)
            (src / folder / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels(seed)).save(src / folder / "images" / f"{number}_{tag}.tif", compression="tiff_lzw")
            palette_gif(src / folder / "1st_manual" / f"{number}_manual1.gif", vessel_mask(seed))
            palette_gif(src / folder / "mask" / f"{number}_{tag}_mask.gif", np.full((5, 6), 255, np.uint8))
            if folder == "test":
                second = src / folder / "2nd_manual" / f"{number}_manual2.gif"
                palette_gif(second, vessel_mask(seed + 100), colours=((4, 2, 4), (252, 254, 252)))
    return src


def read(path):
    return np.asarray(Image.open(path))


def test_drive_conversion(tmp_path, capsys):
    src, out = fake_drive(tmp_path / "DRIVE"), tmp_path / "out"
    assert prepare_data.main(["drive", str(src), str(out)]) == 0
    assert "wrote 2 train and 1 test images" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["21.png", "22.png"]
    np.testing.assert_array_equal(read(out / "train" / "images" / "22.png"), pixels(22))
    np.testing.assert_array_equal(read(out / "train" / "masks" / "21.png"), vessel_mask(21))
    np.testing.assert_array_equal(read(out / "test" / "masks" / "01.png"), vessel_mask(1))
    # The second observer's palette colours (4,2,4) / (252,254,252) become 0 / 255.
    np.testing.assert_array_equal(read(out / "test" / "masks_2nd" / "01.png"), vessel_mask(101))
    assert read(out / "test" / "fov" / "01.png").min() == 255
    dataset = load_split(out, "train")
    assert dataset.names == ["21", "22"] and dataset.has_fov
    np.testing.assert_array_equal(dataset[0].mask, vessel_mask(21) // 255)


def test_drive_missing_folder_and_file(tmp_path, capsys):
    src = fake_drive(tmp_path / "DRIVE")
    for gif in (src / "test" / "mask").iterdir():
        gif.unlink()
    (src / "test" / "mask").rmdir()
    assert prepare_data.main(["drive", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {src / 'test' / 'mask'}: DRIVE mask folder not found\n"

    src = fake_drive(tmp_path / "DRIVE2")
    (src / "training" / "1st_manual" / "22_manual1.gif").unlink()
    assert prepare_data.main(["drive", str(src), str(tmp_path / "out")]) == 2
    assert "22_manual1.gif: file not found (expected for image 22_training.tif)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_drive_refuses_to_overwrite_without_flag(tmp_path, capsys):
    src, out = fake_drive(tmp_path / "DRIVE"), tmp_path / "out"
    assert prepare_data.main(["drive", str(src), str(out)]) == 0
    assert prepare_data.main(["drive", str(src), str(out)]) == 2
    assert "output split folder is not empty (pass --overwrite" in capsys.readouterr().err
    assert prepare_data.main(["drive", str(src), str(out), "--overwrite"]) == 0


def fake_kvasir(src, names):
    for i, name in enumerate(names):
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(i, 16, 20)).save(src / "images" / f"{name}.jpg", quality=90)
        mask = np.zeros((16, 20, 3), np.uint8)
        mask[4:12, 5:15] = 255
        Image.fromarray(mask).save(src / "masks" / f"{name}.jpg", quality=75)  # JPEG noise around 0 / 255
    return src


def test_kvasir_conversion(tmp_path):
    src, out = fake_kvasir(tmp_path / "kvasir", ["e", "a", "d", "b", "c"]), tmp_path / "out"
    assert prepare_data.main(["kvasir", str(src), str(out), "--test-count", "2"]) == 0
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert sorted(p.name for p in (out / "test" / "masks").iterdir()) == ["d.png", "e.png"]
    assert (out / "test" / "images" / "d.jpg").read_bytes() == (src / "images" / "d.jpg").read_bytes()
    mask = read(out / "train" / "masks" / "a.png")
    expected = np.zeros((16, 20), np.uint8)
    expected[4:12, 5:15] = 255
    np.testing.assert_array_equal(mask, expected)
    assert len(load_split(out, "test")) == 2


def test_kvasir_errors(tmp_path, capsys):
    src = fake_kvasir(tmp_path / "kvasir", ["a", "b", "c"])
    assert prepare_data.main(["kvasir", str(src), str(tmp_path / "out")]) == 2
    assert "--test-count: must be between 1 and 2 for 3 images, got 120" in capsys.readouterr().err
    (src / "masks" / "b.jpg").unlink()
    assert prepare_data.main(["kvasir", str(src), str(tmp_path / "out"), "--test-count", "1"]) == 2
    assert "no mask for image(s) b" in capsys.readouterr().err
    assert prepare_data.main(["kvasir", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nowhere'}: Kvasir-SEG source folder not found")


def test_help_and_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as info:
        prepare_data.main(["--help"])
    assert info.value.code == 0 and "drive" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        prepare_data.main(["stare", "a", "b"])
    assert info.value.code == 2
