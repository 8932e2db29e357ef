"""Create the demo's PostgreSQL database if it is missing: ``demo_database.py URL``.

Exits 1, saying why on stderr, when the server cannot be reached; ``make demo``
then falls back to SQLite.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa


def main(url: str) -> int:
    target = sa.make_url(url)
    server = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            found = connection.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not found:
                name = server.dialect.identifier_preparer.quote(str(target.database))
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.SQLAlchemyError as error:
        print(
            f"demo: PostgreSQL unavailable ({error.__class__.__name__}); using SQLite",
            file=sys.stderr,
        )
        return 1
    finally:
        server.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
