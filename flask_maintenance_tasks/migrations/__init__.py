"""Alembic revisions of the extension's tables, copied into a host app by
``flask mtasks migrations install``."""
