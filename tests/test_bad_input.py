"""Bad input: each case ends with a one-line `error: …` naming the file or key, exit status 2 and
no traceback (tools run in-process through jmedseg.cli.run_tool, exactly as from the shell)."""
import importlib.util
import json
import pickle

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from jmedseg.checkpoint import save_checkpoint
from model_zoo import create_model


def tool_main(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_tool_inprocess(capsys, tool, *argv):
    from jmedseg.cli import run_tool

    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool_main(tool), [*map(str, argv)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def assert_one_line_error(code, err, *fragments):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_dataset(root, n=3, size=(40, 48), mask_values=(0, 255)):
    rs = np.random.RandomState(0)
    for split in ("train", "test"):
        for i in range(n):
            write_png(root / split / "images" / f"{i}.png", rs.randint(0, 255, size + (3,), dtype=np.uint8))
            mask = np.where(rs.rand(*size) > 0.5, mask_values[1], mask_values[0]).astype(np.uint8)
            write_png(root / split / "masks" / f"{i}.png", mask)
    return root


TRAIN_FAST = ["--no-progress", "--set", "train.iterations=1", "data.patch_size=32", "model.args={base_channels: 2}"]


# -- data ----------------------------------------------------------------------------------------
def data_case(tmp_path, breaker):
    root = make_dataset(tmp_path / "ds")
    target = breaker(root)
    return root, str(target)


DATA_CASES = {
    "image without mask": (lambda r: (r / "train/masks/1.png").unlink() or r / "train/masks", "no mask for image(s) 1"),
    "mask without image": (lambda r: (r / "train/images/2.png").unlink() or r / "train/masks", "without image: 2"),
    "size mismatch": (lambda r: write_png(r / "train/masks/0.png", np.zeros((10, 10), np.uint8)) or r / "train/masks/0.png",
                      "does not match"),
    "non-binary mask": (lambda r: write_png(r / "train/masks/0.png", np.full((40, 48), 128, np.uint8)) or r / "train/masks/0.png",
                        "outside"),
    "corrupt image": (lambda r: ((r / "train/images/0.png").write_bytes(b"not a png at all"), r / "train/images/0.png")[1],
                      "cannot decode image"),
    "truncated image": (lambda r: ((r / "train/images/1.png").write_bytes((r / "train/images/1.png").read_bytes()[:60]),
                                   r / "train/images/1.png")[1], "cannot decode image"),
    "empty split": (lambda r: [p.unlink() for p in (r / "train/images").iterdir()] and r / "train/images", "empty split"),
    "missing split": (lambda r: [p.unlink() for d in ("images", "masks") for p in (r / "train" / d).iterdir()]
                      and [(r / "train" / d).rmdir() for d in ("images", "masks")] and (r / "train").rmdir()
                      or r / "train", "split folder not found"),
    "non-binary fov": (lambda r: [write_png(r / "train/fov" / f"{i}.png", np.full((40, 48), 7, np.uint8)) for i in range(3)]
                       and r / "train/fov/0.png", "fov is not binary"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_errors(case, tmp_path, capsys):
    breaker, fragment = DATA_CASES[case]
    root, named = data_case(tmp_path, breaker)
    code, err = run_tool_inprocess(capsys, "train", "--data", root, "--work-dir", tmp_path / "run", *TRAIN_FAST)
    assert_one_line_error(code, err, fragment, named)


def test_multiclass_mask_out_of_range(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", mask_values=(0, 5))
    code, err = run_tool_inprocess(capsys, "train", "--data", root, "--work-dir", tmp_path / "run", *TRAIN_FAST,
                                   "model.num_classes=3")
    assert_one_line_error(code, err, "masks/0.png", "outside")


def test_in_channels_unsupported_by_the_data(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    code, err = run_tool_inprocess(capsys, "train", "--data", root, "--work-dir", tmp_path / "run", *TRAIN_FAST,
                                   "model.in_channels=2")
    assert_one_line_error(code, err, "model.in_channels")


def test_sixteen_bit_and_small_images_are_accepted(tmp_path):
    # Not errors: 16-bit images are scaled to the 8-bit range (/257) and images smaller than the
    # patch are padded; both documented in the README.
    from jmedseg.data import TrainSampler, load_split

    root = make_dataset(tmp_path / "ds", size=(20, 24))
    write_png(root / "train/images/0.png", (np.arange(20 * 24 * 3).reshape(20, 24, 3) * 50).astype(np.uint16))
    data = load_split(root, "train")
    assert data[0].image.dtype == np.float32 and np.isfinite(data[0].image).all()
    images, masks = next(iter(TrainSampler(data, batch_size=2, patch_size=32)))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)


# -- configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, fragments", [
    (["train.lrr=1"], ["unknown key 'train.lrr'", "did you mean 'train.lr'"]),
    (["train.lr=abc"], ["'train.lr' must be a number"]),
    (["train.batch_size=0"], ["'train.batch_size' must be >= 1"]),
    (["train.optimizer=lamb"], ["train.optimizer", "adam"]),
    (["eval.threshold=2"], ["'eval.threshold' must be in [0, 1]"]),
])
def test_config_value_errors(overrides, fragments, tmp_path, capsys):
    code, err = run_tool_inprocess(capsys, "train", "--work-dir", tmp_path / "run", "--set", *overrides)
    assert_one_line_error(code, err, *fragments)


def test_config_file_errors(tmp_path, capsys):
    code, err = run_tool_inprocess(capsys, "train", "--config", tmp_path / "missing.yaml")
    assert_one_line_error(code, err, "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    code, err = run_tool_inprocess(capsys, "train", "--config", bad)
    assert_one_line_error(code, err, "bad.yaml", "line")
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("_base_: nowhere.yaml\n")
    code, err = run_tool_inprocess(capsys, "train", "--config", orphan)
    assert_one_line_error(code, err, "nowhere.yaml")


# -- models --------------------------------------------------------------------------------------
def test_model_errors(tmp_path, capsys):
    code, err = run_tool_inprocess(capsys, "train", "--model", "unnet", "--work-dir", tmp_path / "a")
    assert_one_line_error(code, err, "unknown model 'unnet'", "did you mean 'unet'")
    code, err = run_tool_inprocess(capsys, "train", "--work-dir", tmp_path / "b", "--set", "model.args={base_chanels: 4}")
    assert_one_line_error(code, err, "unknown argument(s) base_chanels", "accepted: base_channels")
    code, err = run_tool_inprocess(capsys, "train", "--work-dir", tmp_path / "c", *TRAIN_FAST, "model.args={depth: 5}")
    assert_one_line_error(code, err, "smaller than the minimum")


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    model = create_model("unet", base_channels=2, depth=2)
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, {"model": {"name": "unet", "args": model.model_args},
                                  "config": {"model": {"name": "unet"}}})
    return path


def test_checkpoint_of_another_model(checkpoint, tmp_path, capsys):
    with np.load(checkpoint) as data:
        arrays = dict(data)
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["model"]["args"]["base_channels"] = 4
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "other.npz", **arrays)
    code, err = run_tool_inprocess(capsys, "test", tmp_path / "other.npz")
    assert_one_line_error(code, err, "other.npz", "mis-shaped")


def test_truncated_checkpoint(checkpoint, capsys):
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    code, err = run_tool_inprocess(capsys, "test", checkpoint)
    assert_one_line_error(code, err, "good.npz", "truncated")


def test_tampered_checkpoint_metadata(checkpoint, tmp_path, capsys):
    with np.load(checkpoint) as data:
        arrays = dict(data)
    arrays["__meta__"] = np.frombuffer(b'{"model": 3', np.uint8)
    np.savez(tmp_path / "tampered.npz", **arrays)
    code, err = run_tool_inprocess(capsys, "test", tmp_path / "tampered.npz")
    assert_one_line_error(code, err, "tampered.npz", "metadata")


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/jmedseg-pwned",))


def test_malicious_pickle_checkpoint_is_refused_and_not_run(tmp_path, capsys):
    marker = "/tmp/jmedseg-pwned"
    import os
    if os.path.exists(marker):
        os.unlink(marker)
    evil = tmp_path / "best.npz"
    evil.write_bytes(pickle.dumps(_Payload()))
    for tool, argv in (("test", [evil]), ("predict", [evil, "-i", evil, "-o", tmp_path / "out"]),
                       ("train", ["--resume", evil])):
        (tmp_path / "config.yaml").write_text("model: {name: unet}\n")
        code, err = run_tool_inprocess(capsys, tool, *argv)
        assert_one_line_error(code, err, "best.npz", "pickle")
    assert not os.path.exists(marker)


# -- command line --------------------------------------------------------------------------------
def test_missing_paths(tmp_path, capsys, checkpoint):
    code, err = run_tool_inprocess(capsys, "test", tmp_path / "none.npz")
    assert_one_line_error(code, err, "none.npz", "not found")
    code, err = run_tool_inprocess(capsys, "predict", checkpoint, "-i", tmp_path / "none.png", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "none.png", "no such file")
    code, err = run_tool_inprocess(capsys, "train", "--data", tmp_path / "nodata", "--work-dir", tmp_path / "r")
    assert_one_line_error(code, err, "nodata", "dataset folder not found")
    code, err = run_tool_inprocess(capsys, "train", "--resume", tmp_path)
    assert_one_line_error(code, err, str(tmp_path), "not a run folder")


def test_unwritable_output_folders(tmp_path, capsys, checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    image = tmp_path / "img.png"
    write_png(image, np.zeros((40, 40, 3), np.uint8))
    code, err = run_tool_inprocess(capsys, "predict", checkpoint, "-i", image, "-o", blocker / "out")
    assert_one_line_error(code, err, "a_file/out", "cannot create the output folder")
    code, err = run_tool_inprocess(capsys, "train", "--work-dir", blocker / "run", *TRAIN_FAST)
    assert_one_line_error(code, err, "a_file/run", "cannot create the run folder")


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, err = run_tool_inprocess(capsys, "test", tmp_path / "none.npz", "--debug")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
