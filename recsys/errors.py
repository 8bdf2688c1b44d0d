"""Domain exceptions. Each message names what is wrong and how to fix it."""


class RecsysError(Exception):
    """Base class for errors a user can act on."""


class InvalidInput(RecsysError):
    """An input file cannot be used at all (for example a required column is missing)."""


class CatalogNotReady(RecsysError):
    """The catalog database is missing or not migrated to the current schema."""


class InvalidSettings(RecsysError):
    """A setting has a value that cannot work."""
