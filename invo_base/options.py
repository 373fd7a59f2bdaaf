"""``Options``: the base of the project's options objects (``ConvertOptions``, ``BenchOptions``,
``TrainOptions``), frozen dataclasses whose field names are their tool's flags."""

import dataclasses


class Options:
    """Mixed into a frozen dataclass: ``of(options, **fields)`` builds one from another and named fields."""

    error = ValueError    # raised for an unknown field name
    what = "option"       # how an error names a field

    @classmethod
    def of(cls, options=None, **fields):
        """``options`` (or the defaults) with ``fields`` replaced; an unknown field is a ``cls.error``."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise cls.error(f"unknown {cls.what}(s): {', '.join(unknown)}")
        return dataclasses.replace(options or cls(), **fields)
