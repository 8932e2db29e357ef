#!/usr/bin/env bash
# The sample app end to end: seed posts, start a worker, start the backfill, and
# serve the dashboard at http://127.0.0.1:5000/maintenance_tasks/ until Ctrl-C.
# Run it with `make demo`, which first creates .venv and starts Redis on
# 127.0.0.1:6379.  SAMPLE_APP_DEMO=1 opens the dashboard without a login: never
# set it outside a demo.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p instance
export FLASK_APP=sample_app
export SAMPLE_APP_DEMO=1
export MAINTENANCE_TASKS_REDIS_URL=${MAINTENANCE_TASKS_REDIS_URL:-redis://127.0.0.1:6379/0}
export SAMPLE_APP_DATABASE_URL=${SAMPLE_APP_DATABASE_URL:-sqlite:///$PWD/instance/demo.db}
host=${DEMO_HOST:-127.0.0.1}
port=${DEMO_PORT:-5000}
flask=.venv/bin/flask

$flask seed --posts "${DEMO_POSTS:-20000}"

$flask mtasks worker >instance/demo-worker.log 2>&1 &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# Something to watch as soon as the page opens (it fails if a backfill is already active).
$flask mtasks run BackfillWordCountTask || true

echo
echo "Dashboard: http://$host:$port/maintenance_tasks/   (worker log: instance/demo-worker.log)"
echo "Try: pause and resume the backfill, run FailingBackfillTask to see an error,"
echo "     RenameAuthorTask with parameters.  Ctrl-C stops the server and the worker."
echo
$flask run --host "$host" --port "$port" --no-reload
