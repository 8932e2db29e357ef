"""Resumable, pausable, throttled data migrations for Flask, run as RQ jobs."""

from __future__ import annotations

from . import signals
from .collections import Batch, in_batches, no_collection
from .exceptions import (
    EnqueueError,
    InvalidArguments,
    InvalidTransition,
    MaintenanceTasksError,
    TaskAlreadyRunning,
    TaskNotFound,
)
from .extension import MaintenanceTasks
from .models import Run, RunStatus
from .task import Task, throttle_on

__all__ = [
    "Batch",
    "EnqueueError",
    "InvalidArguments",
    "InvalidTransition",
    "MaintenanceTasks",
    "MaintenanceTasksError",
    "Run",
    "RunStatus",
    "Task",
    "TaskAlreadyRunning",
    "TaskNotFound",
    "in_batches",
    "no_collection",
    "signals",
    "throttle_on",
]
