"""Failures a store reports in its own words, so the server can map them without knowing the backend.

They live apart from the backends so that importing them never imports a database driver.
"""

from __future__ import annotations


class StoreUnavailable(ConnectionError):
    """The database cannot be reached (or was lost mid-call); the request may be retried.

    Nothing was changed unless the message says the outcome is unknown (connection lost while
    committing): a retry with the same idempotency key is then still safe.
    """


class StoreConflict(RuntimeError):
    """A write lost a race with another sidecar sharing the database; nothing was changed and
    the request may be retried (it then applies to the current state)."""


class StoreFull(StoreUnavailable):
    """The database's disk (or quota) is full; nothing was changed. Writes succeed again, with
    no restart, once space is freed; a retry with the same idempotency key is safe."""
