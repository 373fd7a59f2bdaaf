"""``ConvertOptions``: every choice of one conversion in one object, so that ``convert_model``, ``preflight``
and the CLI pass one value instead of twenty keywords.  No TensorFlow."""

import dataclasses

from convert.errors import ConversionError
from convert.targets import aggregation_for
from invo_base.options import Options


@dataclasses.dataclass(frozen=True)
class ConvertOptions(Options):
    """What to convert to and how to check it; the defaults are invo-convert's."""

    error, what = ConversionError, "conversion option"

    # Precision.
    quantize: str = "none"           # none (float32), float16, dynamic or int8
    io: str = "int8"                 # int8 models' input/output type: int8, uint8 or float32
    float_aggregation: bool = False  # int8: each involution's aggregation stays float32
    calibrator: str = "exact"        # int8: each tensor's own range ("exact") or TF's calibrator ("tf")
    allow_flex: bool = False         # accept TF Select ops (most devices cannot run them)
    legacy_runtime: bool = False     # only ops tflite-runtime 2.14 loads (dynamic: Dense per tensor), else an error
    # Data: calibration (int8) and the held-out samples the checks use.
    calib: str = None                # digits, cifar10, FILE.npz/.npy or an image folder
    calib_samples: int = 200
    data_dir: str = None             # a local cifar-10-batches-py
    # The model.
    target: str = "cpu"              # cpu or gpu: the involution form the file is built with (convert.targets)
    aggregation: str = None          # an Involution strategy overriding the target's
    custom_modules: tuple = ()       # .py files registering the user's layer classes
    arch: str = None                 # the input is an official RedNet checkpoint of this architecture
    input_size: int = 224            # with arch: the square input size
    input_range: str = None          # with arch: "normalized" (default) or "0-255"
    # Checks against Keras and on the GPU path.
    verify_samples: int = 200
    check: bool = True               # a model that misses the quality gate is an error
    min_agreement: float = None      # quality gate bounds; None: the precision's default
    max_rel_error: float = None
    gpu: bool = True                 # compile and compare on the LiteRT GPU accelerator
    seed: int = 0                    # random inputs of float conversions without data
    c_array: bool = False            # also write the file as C source (NAME.h, NAME.cc) and its op list (NAME_ops.h)

    def __post_init__(self):
        object.__setattr__(self, "custom_modules", tuple(self.custom_modules or ()))

    @property
    def strategy(self):
        """The Involution strategy the model's layers are rebuilt with: ``aggregation``, else the target's."""
        try:
            return aggregation_for(self.target, self.aggregation)
        except ValueError as exc:
            raise ConversionError(str(exc)) from None

