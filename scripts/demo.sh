#!/usr/bin/env bash
# The sample app end to end: seed posts, start workers, start two runs, and
# serve the dashboard at http://127.0.0.1:5000/maintenance_tasks/ until Ctrl-C.
# Run it with `make demo`, which first creates .venv and starts Redis on
# 127.0.0.1:6379 (and PostgreSQL when it is installed).  SAMPLE_APP_DEMO=1 opens
# the dashboard without a login: never set it outside a demo.
#
#   DEMO_WORKERS=4        how many workers (the partitioned run uses four at once)
#   DEMO_POSTS=20000      how many posts to seed
#   SAMPLE_APP_DATABASE_URL=...   the database (default: a database mtasks_demo
#                         beside the tests' PostgreSQL database, else SQLite)
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p instance
export FLASK_APP=sample_app
export SAMPLE_APP_DEMO=1
export MAINTENANCE_TASKS_REDIS_URL=${MAINTENANCE_TASKS_REDIS_URL:-redis://127.0.0.1:6379/0}
host=${DEMO_HOST:-127.0.0.1}
port=${DEMO_PORT:-5000}
workers=${DEMO_WORKERS:-4}
flask=.venv/bin/flask

# PostgreSQL lets the partitions of a run write side by side (on SQLite they
# take turns): use a database of the demo's own on the tests' server, if any.
if [[ -z ${SAMPLE_APP_DATABASE_URL:-} ]]; then
    pg_url=$(sed -n 's/^MAINTENANCE_TASKS_TEST_DATABASE_URL=//p' .venv/test-env 2>/dev/null || true)
    if [[ -n $pg_url ]] && .venv/bin/python scripts/demo_database.py "${pg_url%/*}/mtasks_demo"; then
        SAMPLE_APP_DATABASE_URL=${pg_url%/*}/mtasks_demo
    else
        SAMPLE_APP_DATABASE_URL=sqlite:///$PWD/instance/demo.db
    fi
fi
export SAMPLE_APP_DATABASE_URL
echo "demo: database $SAMPLE_APP_DATABASE_URL"

# A fresh database each time: runs of an earlier demo (and its older schema) go.
$flask seed --reset --posts "${DEMO_POSTS:-20000}"

worker_pids=()
stop_workers() {
    kill "${worker_pids[@]}" 2>/dev/null || true
    wait "${worker_pids[@]}" 2>/dev/null || true
}
trap stop_workers EXIT
trap 'exit 130' INT TERM
for n in $(seq 1 "$workers"); do
    $flask mtasks worker >"instance/demo-worker-$n.log" 2>&1 &
    worker_pids+=($!)
done

# Something to watch as soon as the page opens (each fails if its run is already active):
# a backfill, and a run cut into four partitions that the other workers walk side by side.
$flask mtasks run BackfillWordCountTask || true
$flask mtasks run CheckLinksTask || true

echo
echo "Dashboard: http://$host:$port/maintenance_tasks/   ($workers workers, logs: instance/demo-worker-*.log)"
echo "Watch CheckLinksTask's four partition bars move side by side while the backfill runs."
echo "Try: pause and resume a run, run FailingBackfillTask to see an error,"
echo "     RenameAuthorTask with parameters.  Ctrl-C stops the server and the workers."
echo
$flask run --host "$host" --port "$port" --no-reload
