"""The ``flask mtasks`` command group (API.md section 5).

One module per concern: :mod:`.runs` (list, show, run, status, pause, resume,
cancel, set), :mod:`.dryruns` (preview, run-for-real; :mod:`.changes` shows what a
dry run would change), :mod:`.failures` (failures, retry-failures), :mod:`.worker` (worker,
recover), :mod:`.retention` (prune), :mod:`.scaffold` (new) and :mod:`.migrations`
(migrations install).
Every command that reaches the extension's state is wrapped in
:func:`.errors.catch_errors`, so that a user's mistake ends with one
``Error: ...`` line and exit status 1. Every string a command did not write
itself is printed through :func:`.terminal.visible`.
"""

from __future__ import annotations

import typing as t

from flask.cli import AppGroup

from ..i18n import lazy_gettext
from .dryruns import preview_command, run_for_real_command
from .failures import failures_command, retry_failures_command
from .migrations import migrations_cli
from .retention import prune_command
from .runs import (
    cancel_command,
    list_command,
    pause_command,
    resume_command,
    run_command,
    set_command,
    show_command,
    status_command,
)
from .scaffold import new_command
from .worker import recover_command, worker_command

mtasks_cli = AppGroup(
    "mtasks", help=t.cast(str, lazy_gettext("Run and control maintenance tasks."))
)

for _command in (
    list_command,
    show_command,
    run_command,
    status_command,
    preview_command,
    run_for_real_command,
    pause_command,
    resume_command,
    cancel_command,
    set_command,
    failures_command,
    retry_failures_command,
    worker_command,
    recover_command,
    prune_command,
    new_command,
    migrations_cli,
):
    mtasks_cli.add_command(_command)

__all__ = ["mtasks_cli"]
