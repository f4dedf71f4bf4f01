"""User-facing errors.

Anything the user can cause (bad data, a bad config, a foreign checkpoint) raises a
`FashiongenError` whose message is one line naming what is wrong and what to do; the
CLI prints it to stderr and exits with code 2. Anything else is a bug and keeps its traceback.
"""


class FashiongenError(Exception):
    """Base class of every user-facing error."""


class DataError(FashiongenError):
    """A dataset is missing, unreadable or malformed."""


class ConfigError(FashiongenError):
    """A configuration key or value is invalid."""


class CheckpointError(FashiongenError):
    """A checkpoint is missing, corrupt, or of another family or shape."""


class TrainingDivergedError(FashiongenError):
    """A loss became non-finite and training could not recover."""


class TrainingInterruptedError(FashiongenError):
    """Ctrl-C or SIGTERM stopped training; a checkpoint was saved first."""


class OutputExistsError(ConfigError):
    """An output path already holds something this command did not make (--overwrite
    replaces it)."""


class RunBusyError(FashiongenError):
    """Another process is writing into the run folder (it holds the folder's lock)."""
