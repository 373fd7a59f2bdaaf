"""The names the command lines offer, importable without Keras or TensorFlow (so that --help is instant)."""

STRATEGIES = ("shift", "depthwise", "separable")
# What each invo-convert --target builds its involution layers with: the fewest ops one CPU thread runs fastest,
# or the fewest dispatches (docs/gpu_cost_model.md).
TARGET_STRATEGIES = {"cpu": "shift", "gpu": "separable"}
# Channels per kernel group when neither group_number nor group_channels is given: the paper's and the
# official RedNets' choice.
DEFAULT_GROUP_CHANNELS = 16
MODEL_NAMES = ("seed-conv", "seed-involution", "rednet26", "rednet38", "rednet50", "rednet101", "rednet152",
               "rednet-cifar")
# Blocks per stage of the official RedNets (d-li14/involution, mmcls RedNet.arch_settings).
REDNET_DEPTHS = {"rednet26": (1, 2, 4, 1), "rednet38": (2, 3, 5, 2), "rednet50": (3, 4, 6, 3),
                 "rednet101": (3, 4, 23, 3), "rednet152": (3, 8, 36, 3)}
DISTRIBUTE = ("default", "mirrored", "multi-worker")
# What the input of a model built from an official checkpoint takes (involution.pretrained).
INPUT_RANGES = ("normalized", "0-255")


def check_train_options(model, distribute, epochs, batch_size, learning_rate):
    """invo-train's options, checked without TensorFlow (the CLI runs this before importing it, train() too)."""
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown --model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if distribute not in DISTRIBUTE:
        raise ValueError(f"unknown --strategy {distribute!r}; choose one of: {', '.join(DISTRIBUTE)}")
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if not learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {learning_rate}")
