"""What a user passes with --custom-module: their own class, registered under the name it was saved with."""

import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import user_involutions  # noqa: E402

keras.saving.register_keras_serializable(package="Custom")(user_involutions.ExtraConv)
