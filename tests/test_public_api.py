"""The names users import from ``flask_maintenance_tasks`` (design/API.md)."""

from __future__ import annotations
import __future__

import subprocess
import sys
import types

import flask_maintenance_tasks
from flask_maintenance_tasks import exceptions

PUBLIC = [
    "Batch",
    "CSVFileError",
    "CSVFileTooLarge",
    "CSVRow",
    "CSVStorage",
    "CannotRetry",
    "DryRunCommit",
    "EnqueueError",
    "Event",
    "Failure",
    "FailureStatus",
    "InvalidArguments",
    "InvalidStatus",
    "InvalidTransition",
    "MaintenanceTasks",
    "MaintenanceTasksError",
    "Partition",
    "PartitionErrored",
    "Preview",
    "Pruned",
    "Run",
    "RunBusy",
    "RunNotFound",
    "RunStatus",
    "SessionRolledBack",
    "Task",
    "TaskAlreadyRunning",
    "TaskNotFound",
    "TaskStatus",
    "TooManyFailures",
    "csv_collection",
    "csv_download",
    "in_batches",
    "no_collection",
    "signals",
    "throttle_on",
]


def test_all_is_exactly_the_sorted_public_names() -> None:
    assert flask_maintenance_tasks.__all__ == PUBLIC


def test_every_public_name_can_be_imported() -> None:
    namespace: dict[str, object] = {}

    exec("from flask_maintenance_tasks import *", namespace)

    assert sorted(name for name in namespace if name != "__builtins__") == PUBLIC


def test_no_other_public_object_is_exported() -> None:
    # Submodules and ``from __future__ import annotations`` are not exports.
    not_exports = (types.ModuleType, type(__future__.annotations))
    others = {
        name
        for name, value in vars(flask_maintenance_tasks).items()
        if not name.startswith("_") and not isinstance(value, not_exports)
    }

    assert others == set(PUBLIC) - {"signals"}


def test_signals_is_the_signals_module() -> None:
    assert flask_maintenance_tasks.signals.__name__ == "flask_maintenance_tasks.signals"


def test_every_error_users_catch_is_a_maintenance_tasks_error() -> None:
    errors = [getattr(exceptions, name) for name in exceptions.__all__]

    assert all(issubclass(error, flask_maintenance_tasks.MaintenanceTasksError) for error in errors)
    assert exceptions.__all__ == sorted(exceptions.__all__)


def test_csv_collection_is_public() -> None:
    assert callable(flask_maintenance_tasks.csv_collection)


def test_importing_the_package_leaves_alembic_for_the_one_command_that_needs_it() -> None:
    # Every `flask` command of the host app and every worker start pays for what the
    # package imports; Alembic alone costs a tenth of a second or more.
    probe = "import sys, flask_maintenance_tasks; print('alembic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
