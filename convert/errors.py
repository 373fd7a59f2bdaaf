"""The converter's one error type, apart from the converter, so that every module can raise it without
importing the export (which imports most of them)."""


class ConversionError(ValueError):
    """A conversion that cannot be done as asked; one line for the user."""
