"""How the commands show the paths of the files they write into the user's project."""

from __future__ import annotations

from pathlib import Path

from .terminal import visible


def shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when inside it.

    Its control characters, if any, are made visible (:func:`.terminal.visible`).
    """
    try:
        return visible(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return visible(path)
