from __future__ import annotations

from flask_maintenance_tasks import Task, no_collection


class FixInvoicesTask(Task):
    collection = no_collection()

    def process(self) -> None:
        pass
