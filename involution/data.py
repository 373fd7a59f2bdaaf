"""Datasets for training, calibration and evaluation: float32 NHWC.

Sources, and the one rule each follows:
  * ``digits``: scikit-learn's 1,797 real handwritten digits (8x8, shipped with the
    package, so it works offline): grey levels / 16 to [0, 1], resized (bilinear) and
    repeated over channels to the model input.
  * ``cifar10``: ``keras.datasets.cifar10`` (downloads when online), or a local
    ``cifar-10-batches-py`` directory in the original pickle format: uint8 pixels / 255,
    resized to the model input if it differs.
  * an image folder with one sub-folder per class: each image resized (bilinear) to the
    model input, uint8 pixels / 255.  Calibration needs no labels and also takes a flat
    folder of images.
  * a ``.npz`` file with ``x`` and ``y`` (``y`` optional for calibration), or ``.npy``
    (images only): used exactly as stored.  Float arrays reach the model unchanged;
    uint8 arrays are pixels and are divided by 255; other integer types are refused.
    The array's H x W x C must be the model's: a different size is an error, never resized.

Every source is split once into a training and a validation part by ``split_indices``:
a fixed permutation (``SPLIT_SEED``), independent of any training seed, so training,
calibration (training part) and every accuracy the tools print (validation part) agree.
"""

import os
import pickle

import numpy as np

DATASETS = ("digits", "cifar10")
SPLIT_SEED = 0  # the validation split of every dataset; never the training seed
VAL_FRACTION = 0.2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class DataError(ValueError):
    """Data that cannot be used; the message is one line meant for the user."""


class Dataset:
    """Train and held-out splits; ``y`` may be None (unlabelled calibration data)."""

    def __init__(self, x_train, y_train, x_val, y_val, num_classes, name):
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.num_classes = num_classes
        self.name = name

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def _resize(images, shape):
    """images [N, h, w, c] float in [0, 1] -> [N, H, W, C]; grey expands to C channels."""
    h, w, c = shape
    if images.shape[1:3] != (h, w):
        from PIL import Image

        out = np.empty((len(images), h, w, images.shape[3]), np.float32)
        for i, img in enumerate(images):
            chans = [np.asarray(Image.fromarray(img[..., k]).resize((w, h), Image.BILINEAR)) for k in range(img.shape[-1])]
            out[i] = np.stack(chans, -1)
        images = out
    if images.shape[3] != c:
        if images.shape[3] == 1:
            images = np.repeat(images, c, axis=3)
        elif c == 1:
            images = images.mean(axis=3, keepdims=True)
        else:
            raise DataError(f"cannot map {images.shape[3]}-channel images to {c} channels")
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def split_indices(n, val_fraction=VAL_FRACTION):
    """(train indices, validation indices) of ``n`` samples: a fixed permutation, the same for every run."""
    if n < 2:
        raise DataError(f"need at least 2 samples to hold one out, found {n}")
    idx = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return idx[n_val:], idx[:n_val]


def _split(x, y, val_fraction=VAL_FRACTION):
    train, val = split_indices(len(x), val_fraction)
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    return x[train], pick(y, train), x[val], pick(y, val)


def load_digits(input_shape=(32, 32, 3), val_fraction=VAL_FRACTION):
    from sklearn.datasets import load_digits as _digits

    d = _digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    x = _resize(x, input_shape)
    y = d.target.astype(np.int64)
    return Dataset(*_split(x, y, val_fraction), 10, "digits")


def _read_cifar_batch(path):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: missing CIFAR-10 batch file") from None
    except Exception as exc:
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected N x 3072 image rows with N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(data_dir=None, input_shape=(32, 32, 3)):
    """CIFAR-10 from a local ``cifar-10-batches-py`` directory, else through keras.datasets."""
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise DataError(f"{data_dir}: no such CIFAR-10 directory (expected cifar-10-batches-py)")
        train = [_read_cifar_batch(os.path.join(data_dir, f"data_batch_{i}")) for i in range(1, 6)]
        x_tr = np.concatenate([t[0] for t in train])
        y_tr = np.concatenate([t[1] for t in train])
        x_te, y_te = _read_cifar_batch(os.path.join(data_dir, "test_batch"))
    else:
        import keras

        try:
            (x_tr, y_tr), (x_te, y_te) = keras.datasets.cifar10.load_data()
        except Exception as exc:
            raise DataError(f"cannot download CIFAR-10 ({type(exc).__name__}); pass --data-dir with a local cifar-10-batches-py") from None
        y_tr, y_te = y_tr.ravel(), y_te.ravel()
    prep = lambda x: _resize(x.astype(np.float32) / 255.0, input_shape)  # noqa: E731
    return Dataset(prep(x_tr), y_tr.astype(np.int64), prep(x_te), y_te.astype(np.int64), 10, "cifar10")


def _check_images(x, source):
    if x.size == 0:
        raise DataError(f"{source}: no samples")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{source}: images must be numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{source}: images must be N x H x W x C, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{source}: images contain NaN or infinite values")
        return x.astype(np.float32)  # as stored: the model gets exactly these values
    if x.dtype != np.uint8:
        raise DataError(f"{source}: {x.dtype} arrays are ambiguous; store the values the model takes as float32, "
                        "or 8-bit pixels as uint8 (divided by 255)")
    return x.astype(np.float32) / 255.0


def _check_labels(y, n, source):
    y = np.asarray(y).ravel()
    if len(y) != n:
        raise DataError(f"{source}: {n} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(y == np.round(y)):
            raise DataError(f"{source}: labels must be integer class ids")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{source}: labels out of range (found {y.min()}; class ids start at 0)")
    return y


def load_array_file(path, input_shape=None):
    """(x, y or None) from ``.npz`` (``x``, optional ``y``) or ``.npy`` (images)."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz/.npy file ({type(exc).__name__})") from None
    if isinstance(data, np.ndarray):
        x, y = data, None
    else:
        if "x" not in data.files:
            raise DataError(f"{path}: .npz needs an array named 'x' (and 'y' for labels); found {data.files}")
        x = data["x"]
        y = data["y"] if "y" in data.files else None
    x = _check_images(x, path)
    if y is not None:
        y = _check_labels(y, len(x), path)
    if input_shape is not None:
        x = _fit_shape(x, input_shape, path)
    return x, y


def _fit_shape(x, input_shape, source):
    """Arrays are used as given: a different H x W x C is a preprocessing mistake, not something to resize."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{source}: samples are {'x'.join(map(str, x.shape[1:]))}, the model takes "
                        f"{'x'.join(map(str, input_shape))}; arrays are used as stored (only image folders are resized)")
    return x


def _center_crop(img, w, h):
    """The official ImageNet evaluation transform: short side to 256/224 of the crop, then the centre crop."""
    from PIL import Image

    short = round(min(w, h) * 256 / 224)
    scale = short / min(img.size)
    img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))), Image.BILINEAR)
    left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
    return img.crop((left, top, left + w, top + h))


def load_image_folder(path, input_shape=(32, 32, 3), crop=False, labels=True):
    """(x, y, class names) from ``path/<class>/<image>``: pixels / 255, each image resized to the input,
    or with ``crop`` the ImageNet evaluation transform (short side to 256 for 224, centre crop).

    With ``labels=False`` (calibration needs none) a flat folder of images is read too: y and the class names
    are then None.
    """
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if classes:
        files = [(label, os.path.join(path, cls, f)) for label, cls in enumerate(classes)
                 for f in sorted(os.listdir(os.path.join(path, cls)))]
    elif labels:
        raise DataError(f"{path}: labelled data needs one sub-folder of images per class (calibration alone "
                        "takes a flat folder of images)")
    else:
        files = [(None, os.path.join(path, f)) for f in sorted(os.listdir(path))]
    h, w, c = input_shape
    xs, ys = [], []
    for label, fpath in files:
        if not fpath.lower().endswith(IMAGE_EXTENSIONS):
            continue
        try:
            img = Image.open(fpath).convert("L" if c == 1 else "RGB")
            img = _center_crop(img, w, h) if crop else img.resize((w, h), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{fpath}: not a readable image ({exc})") from None
        arr = np.asarray(img, np.float32) / 255.0
        xs.append(arr[..., None] if arr.ndim == 2 else arr)
        ys.append(label)
    if not xs:
        where = "its class folders" if classes else "it"
        raise DataError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}")
    if not classes:
        return np.stack(xs), None, None
    return np.stack(xs), np.asarray(ys, np.int64), classes


def check_source(source, data_dir=None, option="--dataset"):
    """A data source exists, checked before anything is loaded (or TensorFlow imported): a name in
    ``DATASETS``, a .npz/.npy file or an image folder."""
    if source in DATASETS:
        if data_dir and not os.path.isdir(data_dir):
            raise DataError(f"{data_dir}: no such CIFAR-10 directory (--data-dir takes a local cifar-10-batches-py)")
        return
    if os.path.isdir(source) or (os.path.isfile(source) and source.endswith((".npz", ".npy"))):
        return
    if os.path.exists(source):
        raise DataError(f"{source}: unsupported data file for {option}; use a .npz/.npy file or an image folder")
    raise DataError(f"{option} {source}: no such file or folder, and not a dataset name ({', '.join(DATASETS)})")


def load_dataset(source, input_shape=(32, 32, 3), data_dir=None, val_fraction=VAL_FRACTION, labels=True,
                 image_rule=None):
    """A ``Dataset`` from a name in ``DATASETS``, a ``.npz``/``.npy`` file or an image folder.

    ``labels=False`` accepts unlabelled arrays (calibration); their ``y`` parts are None.
    ``image_rule`` (image folders only) is a callable ``pixels_0_1 -> model input`` applied after the
    ImageNet evaluation crop instead of the plain resize (the official RedNets' input, see
    ``involution.pretrained.image_rule``).
    """
    input_shape = tuple(input_shape)
    if source == "digits":
        return load_digits(input_shape, val_fraction)
    if source == "cifar10":
        return load_cifar10(data_dir, input_shape)
    if os.path.isdir(source):
        x, y, classes = load_image_folder(source, input_shape, crop=image_rule is not None, labels=labels)
        if image_rule is not None:
            x = image_rule(x).astype(np.float32)
        num_classes = len(classes) if classes else None
    elif source.endswith((".npz", ".npy")):
        x, y = load_array_file(source, input_shape)
        if y is None and labels:
            raise DataError(f"{source}: training needs labels: save the file with x=... and y=...")
        num_classes = None if y is None else int(y.max()) + 1
    elif os.path.exists(source):
        raise DataError(f"{source}: unsupported data file; use a .npz with x and y, or an image folder")
    else:
        raise DataError(f"unknown dataset {source!r}; choose one of: {', '.join(DATASETS)}, a .npz file or an image folder")
    try:
        parts = _split(x, y, val_fraction)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    return Dataset(*parts, num_classes, os.path.basename(source.rstrip("/")))
