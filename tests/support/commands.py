"""Running ``flask mtasks`` in the test's process: the ``cli`` fixture's type."""

from __future__ import annotations

import typing as t

from click.testing import Result

#: ``cli("status", "1")`` runs ``flask mtasks status 1`` on the test app (the ``cli`` fixture).
Invoke = t.Callable[..., Result]


def started(result: Result) -> int:
    """The run id ``flask mtasks run`` printed (on its first line)."""
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip().splitlines()[0])


def error_line(result: Result) -> str:
    """The one ``Error: ...`` line of a failed command; fails on a traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]
