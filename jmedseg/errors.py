"""Errors for bad user input. Tools print them as one line (``error: ...``) and exit with status 2."""


class JMedSegError(Exception):
    """Base class: the message names the file or key and what is wrong with it."""


class ConfigError(JMedSegError, ValueError):
    """A config file, key or value is invalid."""


class DataError(JMedSegError, ValueError):
    """A dataset folder or file is missing, unreadable or inconsistent."""


class CheckpointError(JMedSegError, ValueError):
    """A checkpoint is unreadable, unsafe or does not match the model."""


class ModelError(JMedSegError, ValueError):
    """An unknown model name or invalid model arguments."""
