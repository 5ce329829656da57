"""User-facing errors: one line that names the file or key and what was expected."""


class SparseclError(Exception):
    """Base class; the CLI prints these as a single line and exits 1."""


class ConfigError(SparseclError):
    """A config key is missing, unknown or out of range."""


class DataError(SparseclError):
    """A data file is missing, corrupt or not in the expected format."""


class UnknownName(ConfigError, KeyError):
    """A registry has no entry of that name (a dataset, backbone or method)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
