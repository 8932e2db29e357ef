"""Resumable, pausable, throttled data migrations for Flask, run as RQ jobs."""

from __future__ import annotations

from . import signals
from .csv.rows import CSVRow, csv_collection
from .csv.storage import CSVStorage
from .csv.uploads import csv_download
from .exceptions import (
    CannotRetry,
    CSVFileError,
    CSVFileTooLarge,
    DryRunCommit,
    EnqueueError,
    InvalidArguments,
    InvalidStatus,
    InvalidTransition,
    MaintenanceTasksError,
    PartitionErrored,
    RunBusy,
    RunNotFound,
    SessionRolledBack,
    TaskAlreadyRunning,
    TaskNotFound,
    TooManyFailures,
)
from .extension import MaintenanceTasks
from .models import Event, Failure, FailureStatus, Run, RunStatus
from .preview import Preview
from .published import TaskStatus
from .retention import Pruned
from .sources import Batch, in_batches, no_collection
from .sources.partitioned import Partition
from .task import Task, throttle_on

__all__ = [
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
