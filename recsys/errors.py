"""Domain exceptions. Each message names what is wrong and how to fix it."""


class RecsysError(Exception):
    """Base class for errors a user can act on."""


class InvalidInput(RecsysError):
    """An input file cannot be used at all (for example a required column is missing)."""


class CatalogNotReady(RecsysError):
    """The catalog database is missing or not migrated to the current schema; ``path``: the
    SQLite file, where the message leaves it out (the service shows the message to anyone)."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class InvalidSettings(RecsysError):
    """A setting has a value that cannot work; ``setting``: which (a ``Settings`` field),
    where known, so that the message can name where its value came from
    (``Settings.load``: ``RECSYS_<FIELD>``; the CLI: its flag)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class UnknownFilter(InvalidInput, ValueError):
    """A filter on an attribute the model cannot filter on (a ValueError as before: callers
    that caught one still do)."""


class UnknownItem(RecsysError, KeyError):
    """An item id that the model or catalog does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown item"


class SearchTooBroad(RecsysError):
    """A title search that would read more of the catalog than its time allows."""


class ModelNotTrained(RecsysError):
    """No trained model bundle is available (run `recsys train`)."""


class InvalidBundle(RecsysError):
    """A model bundle directory is incomplete, corrupt or from an incompatible version."""


class TrainingFailed(RecsysError):
    """A stage of `recsys train` failed; the previously active bundle is untouched."""


class TrainingDiverged(RecsysError):
    """A training's loss or weights stopped being finite numbers (a learning rate too high,
    usually): every later step stays NaN, so it stops there and saves nothing of them."""


class Interrupted(RecsysError):
    """Stopped by the user (Ctrl-C) part-way; the message says what was kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what cron, Airflow and Kubernetes send to stop a job) turned into the path
    Ctrl-C takes, so that its clean-ups run and what was kept is said; the CLI exits 143."""


class TryAgain(RecsysError):
    """A passing condition stopped the command (the catalog database away or locked by
    another writer, a removal racing an ingest): the same command may succeed later. The
    CLI exits 75 (sysexits' EX_TEMPFAIL), apart from 2, input that cannot work."""


class PhotoStoreUnavailable(RecsysError):
    """An uploaded photo cannot be stored: the images root (``RECSYS_IMAGES_ROOT``) or its
    uploads folder is missing and cannot be made, or is not writable; ``path``: the folder."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
