"""Training curves and per-pixel kernel maps, written as PNG files."""

import numpy as np

from involution.layer import Involution


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend: every chart of the project is written, never shown
    (no display on a server or in CI).  The one place the backend is chosen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histories(histories, out_prefix):
    """``histories``: {label: keras History.history dict}.  Writes ``<prefix>loss.png``, ``<prefix>accuracy.png``."""
    plt = pyplot()
    paths = []
    for metric in ("loss", "accuracy"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, hist in histories.items():
            epochs = np.arange(1, len(hist[metric]) + 1)
            ax.plot(epochs, hist[metric], "-o", label=f"{label} train")
            if f"val_{metric}" in hist:
                ax.plot(epochs, hist[f"val_{metric}"], "--s", label=f"{label} val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = f"{out_prefix}{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def involution_kernels(model, images):
    """[(layer name, kernels [N, Ho, Wo, K*K*G])] for every Involution layer of a functional model."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, Involution)]
    if not layers:
        return []
    feed = keras.Model(model.inputs, [layer.input for layer in layers])
    inputs = feed.predict(images, verbose=0)
    if len(layers) == 1:
        inputs = [inputs]
    return [(layer.name, np.asarray(layer.generate_kernel(x, training=False))) for layer, x in zip(layers, inputs)]


def plot_kernel_maps(model, images, path):
    """The seed's figure: each input next to the summed per-pixel kernel of each involution layer, with a
    colour bar per map (the kernel's sum over its taps and groups at each output pixel, unitless)."""
    plt = pyplot()
    kernels = involution_kernels(model, images)
    cols = 1 + len(kernels)
    fig, axes = plt.subplots(len(images), cols, figsize=(2.6 * cols, 2.4 * len(images) + 0.6), squeeze=False)
    for r, img in enumerate(images):
        axes[r, 0].imshow(np.clip(img, 0, 1) if img.shape[-1] == 3 else img[..., 0], cmap=None if img.shape[-1] == 3 else "gray")
        axes[r, 0].set_title("input" if r == 0 else "", fontsize=11)
        for c, (name, kern) in enumerate(kernels, start=1):
            summed = kern[r].sum(axis=-1)
            shown = axes[r, c].imshow(summed, cmap="viridis")
            fig.colorbar(shown, ax=axes[r, c], fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
            if r == 0:
                axes[r, c].set_title(f"{name}\n{summed.shape[0]}x{summed.shape[1]} kernel sum", fontsize=11)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Per-pixel involution kernels, summed over taps and groups, next to each input", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
