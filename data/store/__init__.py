"""The DuckDB store (schema, migrations, reads and batched writes)."""

from data.store.schema import LATEST_VERSION, MIGRATIONS, Migration
from data.store.store import (
    DEFAULT_DB_PATH,
    Store,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    StoreWriteError,
    from_json,
    is_storage_failure,
    to_json,
    utcnow,
)

__all__ = [
    "DEFAULT_DB_PATH",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "StoreWriteError",
    "from_json",
    "is_storage_failure",
    "to_json",
    "utcnow",
]
