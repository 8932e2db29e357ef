#!/usr/bin/env bash
# The sample app end to end: seed posts, start a worker, run the backfill
# with a progress bar, show the runs.  Run it with `make demo`, which first
# creates .venv and starts Redis on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p instance
export FLASK_APP=sample_app
export MAINTENANCE_TASKS_REDIS_URL=${MAINTENANCE_TASKS_REDIS_URL:-redis://127.0.0.1:6379/0}
export SAMPLE_APP_DATABASE_URL=${SAMPLE_APP_DATABASE_URL:-sqlite:///$PWD/instance/demo.db}
flask=.venv/bin/flask

$flask seed --posts 5000
$flask mtasks list

$flask mtasks worker >instance/demo-worker.log 2>&1 &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

echo "Running BackfillWordCountTask through a worker (log: instance/demo-worker.log)"
$flask mtasks run BackfillWordCountTask --wait
$flask mtasks status
