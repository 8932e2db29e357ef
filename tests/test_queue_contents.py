"""What the extension puts in Redis: the ids of a run and its job, nothing else.

RQ pickles a job into Redis; whoever can write there can make a worker run
code, and whoever can read there sees what the job carries. So a job carries
no argument, no CSV row and no metadata: the worker reads them from the run's
row (docs/workers.rst, "Redis must be trusted").
"""

from __future__ import annotations

import io
import typing as t

from flask import Flask
from redis import Redis
from rq.job import Job

SECRET = "pw-never-in-redis"


def test_a_queued_job_carries_only_the_run_id_and_its_job_id(
    app: Flask, mtasks: t.Any, redis_url: str
) -> None:
    run = mtasks.run("ParamsTask", {"content": SECRET, "password": SECRET}, metadata=SECRET)
    upload = mtasks.run(
        "ImportItemsTask",
        csv_file=(f"{SECRET}.csv", io.BytesIO(f"id,title\n1,{SECRET}\n".encode())),
    )
    redis = Redis.from_url(redis_url)

    jobs = [Job.fetch(r.job_id, connection=redis) for r in (run, upload)]

    assert [(job.func_name, job.args, job.kwargs) for job in jobs] == [
        ("flask_maintenance_tasks.job.run_job", (r.id, r.job_id), {}) for r in (run, upload)
    ]
    assert [job.description for job in jobs] == [
        f"maintenance task run #{r.id}" for r in (run, upload)
    ]
    assert all(SECRET not in repr(job.meta) for job in jobs)
    redis.close()
