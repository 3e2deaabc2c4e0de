"""The engine's error types: a user error carries a one-line message that says how to fix it.

Front ends catch `MtmError` in one place and print `error: <message>`; anything else is a bug
and keeps its traceback.
"""


class MtmError(Exception):
    """A user-facing error: bad input, missing file, unknown name."""


class ConfigError(MtmError):
    """The experiment spec is malformed or names something unknown."""


class DataError(MtmError):
    """A dataset cannot be found, read or downloaded."""


class ModelError(MtmError):
    """A backbone or its weights cannot be built or loaded."""
