#!/usr/bin/env bash
# Demo of the sample app: seed a SQLite database, start a worker, run
# UpdatePostsTask to completion, show the task status.  Run via `make demo`
# (which first starts Redis on 127.0.0.1:6379 and creates .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p instance
export FLASK_APP=sample_app
export MAINTENANCE_TASKS_REDIS_URL=redis://127.0.0.1:6379/0
export SAMPLE_APP_DATABASE_URL="sqlite:///$PWD/instance/demo.db"
flask=.venv/bin/flask

$flask mtasks demo-setup

$flask mtasks worker &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

$flask mtasks run UpdatePostsTask --wait
$flask mtasks status
