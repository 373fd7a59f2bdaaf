"""Model builders (exact parameter counts) and the data loaders on real file formats."""

import pickle

import numpy as np
import pytest
from conftest import write_cifar
from PIL import Image

from involution.data import DataError, load_array_file, load_dataset, load_image_folder
from involution.models import MODEL_NAMES, build_model


def _counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable, model.count_params() - trainable


def test_seed_models_have_the_notebooks_parameter_counts():
    assert _counts(build_model("seed-conv"))[0] == 319_178
    assert _counts(build_model("seed-involution")) == (13_080, 13_074, 6)


@pytest.mark.parametrize("name,paper", [("rednet26", 9.23e6), ("rednet38", 12.39e6), ("rednet50", 15.54e6)])
def test_rednet_parameter_counts_within_one_percent_of_the_paper(name, paper):
    """The paper counts PyTorch parameters, i.e. without BatchNorm running statistics (Keras non-trainables)."""
    _, trainable, _ = _counts(build_model(name))
    assert abs(trainable - paper) / paper < 0.01, trainable


def test_rednet_cifar_runs_on_32x32():
    model = build_model("rednet-cifar")
    assert model.output.shape[-1] == 10
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape == (2, 10)


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet")
    assert all(n in str(info.value) for n in MODEL_NAMES)


def test_offline_digits_are_real_images_resized_to_the_model():
    ds = load_dataset("digits", (32, 32, 3))
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_val) == 1797
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.x_train.std() > 0.1
    assert set(np.unique(ds.y_val)) == set(range(10))


def test_cifar10_from_a_local_batches_directory(tmp_path):
    root = write_cifar(tmp_path / "cifar-10-batches-py")
    with open(root / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    ds = load_dataset("cifar10", (32, 32, 3), data_dir=str(root))
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_val.shape == (6, 32, 32, 3)
    # channel-first rows become HWC pixels: red plane first
    np.testing.assert_allclose(ds.x_train[0, 0, 0], first[b"data"][0][[0, 1024, 2048]] / 255.0, rtol=1e-6)


def test_cifar10_missing_or_corrupt_directory(tmp_path):
    with pytest.raises(DataError, match="no such CIFAR-10 directory"):
        load_dataset("cifar10", data_dir=str(tmp_path / "nope"))
    root = write_cifar(tmp_path / "c")
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 batch"):
        load_dataset("cifar10", data_dir=str(root))


def test_npz_and_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=pixels, y=np.arange(10) % 3)
    ds = load_dataset(str(tmp_path / "d.npz"), (32, 32, 3))
    assert ds.num_classes == 3 and ds.x_train.shape[1:] == (32, 32, 3)
    # uint8 arrays are pixels: exactly / 255, nothing else
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.x_train, ds.x_val]).ravel()),
                                  np.sort(pixels.astype(np.float32).ravel() / 255.0))
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    x, y, classes = load_image_folder(str(tmp_path / "imgs"), (32, 32, 3))
    assert x.shape == (6, 32, 32, 3) and classes == ["cat", "dog"] and list(y) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("arrays,message", [
    (dict(x=np.zeros((4, 8, 8, 3)), y=np.array([0, 1, -1, 2])), "out of range"),
    (dict(x=np.zeros((4, 8, 8, 3), np.int64), y=np.arange(4)), "uint8"),
    (dict(x=np.zeros((4, 8)), y=np.arange(4)), "N x H x W x C"),
    (dict(x=np.full((2, 8, 8, 3), np.nan), y=np.arange(2)), "NaN"),
    (dict(x=np.zeros((0, 8, 8, 3)), y=np.zeros(0)), "no samples"),
    (dict(x=np.zeros((4, 8, 8, 3)), y=np.arange(3)), "4 images but 3 labels"),
    (dict(images=np.zeros((4, 8, 8, 3))), "named 'x'"),
])
def test_bad_array_files_are_explained(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_array_file(str(tmp_path / "bad.npz"), (8, 8, 3))


def test_float_arrays_reach_the_model_exactly_as_stored(tmp_path):
    """No range guess: mean/std-normalised data or feature maps (values far above 1) stay as they are."""
    x = (np.random.default_rng(1).standard_normal((6, 8, 8, 4)) * 40.0).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x)
    got, _ = load_array_file(str(tmp_path / "f.npz"), (8, 8, 4))
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("shape,message", [((6, 8, 8, 3), "8x8x3, the model takes 16x16x3"),
                                           ((6, 16, 16, 1), "16x16x1, the model takes 16x16x3")])
def test_arrays_of_another_size_are_refused_not_resized(tmp_path, shape, message):
    np.savez(tmp_path / "s.npz", x=np.zeros(shape, np.float32))
    with pytest.raises(DataError, match=message):
        load_array_file(str(tmp_path / "s.npz"), (16, 16, 3))


def test_integer_arrays_other_than_uint8_are_refused(tmp_path):
    np.savez(tmp_path / "i.npz", x=np.zeros((4, 8, 8, 3), np.int32))
    with pytest.raises(DataError, match="uint8"):
        load_array_file(str(tmp_path / "i.npz"), (8, 8, 3))


def _rows(a):
    return {row.tobytes() for row in a.reshape(len(a), -1)}


def test_one_split_per_dataset_disjoint_reproducible_and_independent_of_training(tmp_path):
    """Training, calibration and held-out evaluation all use involution.data.split_indices."""
    from convert.verification import calibration_and_held_out
    from involution.data import SPLIT_SEED, split_indices

    train, val = split_indices(100)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val) and set(train) | set(val) == set(range(100))
    np.testing.assert_array_equal(split_indices(100)[1], val)  # reproducible
    np.random.seed(123)  # whatever seed a training run sets globally, the split stays SPLIT_SEED's
    np.testing.assert_array_equal(split_indices(100)[1], val)
    assert SPLIT_SEED != 1  # never the training seed's default (invo-train --seed 1)

    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 8, 8, 3), dtype=np.float32), y=np.arange(40) % 4)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    for source, shape in (("digits", (16, 16, 3)), (str(tmp_path / "d.npz"), (8, 8, 3)), (str(tmp_path / "imgs"), (8, 8, 3))):
        ds = load_dataset(source, shape)  # what invo-train trains on (any --seed)
        cal, held, _ = calibration_and_held_out(source, shape, count=10_000)
        assert _rows(cal) <= _rows(ds.x_train), source
        assert not _rows(held) & _rows(ds.x_train), source  # no held-out sample was trained on
        assert len(held) == len(ds.x_val) and _rows(held) == _rows(ds.x_val)
        assert abs(len(ds.x_val) / (len(ds.x_val) + len(ds.x_train)) - 0.2) < 0.05


def test_calibration_takes_a_flat_folder_of_images_training_needs_classes(tmp_path):
    """Calibration needs no labels: a flat folder of images is read as it is; labelled uses say what they need."""
    from PIL import Image

    from involution.data import DataError, load_dataset

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    ds = load_dataset(str(tmp_path), (16, 16, 3), labels=False)
    assert ds.y_train is None and ds.num_classes is None
    x = np.concatenate([ds.x_train, ds.x_val])
    assert x.shape == (6, 16, 16, 3) and 0 <= x.min() and x.max() <= 1
    first = np.asarray(Image.open(tmp_path / "img0.png").resize((16, 16), Image.BILINEAR), np.float32) / 255
    assert any(np.array_equal(first, s) for s in x)  # the one documented rule: resize, then pixels / 255
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        load_dataset(str(tmp_path), (16, 16, 3))


def test_npy_file_is_images_without_labels(tmp_path):
    """A .npy holds images only: calibration takes it as stored; training, which needs labels, refuses it."""
    x = np.random.default_rng(0).random((12, 8, 8, 3), dtype=np.float32)
    np.save(tmp_path / "cal.npy", x)
    ds = load_dataset(str(tmp_path / "cal.npy"), (8, 8, 3), labels=False)
    got = np.concatenate([ds.x_train, ds.x_val])
    assert got.shape == x.shape and ds.y_val is None
    assert sorted(map(bytes, got.reshape(12, -1).view(np.uint8))) == sorted(map(bytes, x.reshape(12, -1).view(np.uint8)))
    with pytest.raises(DataError):
        load_dataset(str(tmp_path / "cal.npy"), (8, 8, 3), labels=True)


def test_center_crop_is_the_imagenet_evaluation_transform():
    """Short side to 256/224 of the crop, then the centre: a 300x200 image to 32x32 keeps its centre column."""
    from involution.data import _center_crop

    img = np.zeros((200, 300, 3), np.uint8)
    img[:, 140:160] = 255  # a white stripe through the centre
    out = np.asarray(_center_crop(Image.fromarray(img), 32, 32))
    assert out.shape == (32, 32, 3)
    assert out[:, 15:17].min() > 100 and out[:, :8].max() == 0 and out[:, -8:].max() == 0
    wide = np.asarray(_center_crop(Image.fromarray(np.zeros((40, 400, 3), np.uint8)), 32, 32))
    assert wide.shape == (32, 32, 3)  # the short side is scaled to 37, never below the crop
