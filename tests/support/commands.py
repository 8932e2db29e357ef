"""Running ``flask mtasks`` in the test's process: the ``cli`` fixture's type."""

from __future__ import annotations

import typing as t

from click.testing import Result

#: ``cli("status", "1")`` runs ``flask mtasks status 1`` on the test app (the ``cli`` fixture).
Invoke = t.Callable[..., Result]
