#!/usr/bin/env bash
# Prepare a development/CI machine (Debian 12) for flask-maintenance-tasks.
#
#   scripts/bootstrap.sh [STEP...]     STEP: apt venv redis postgres (default: all)
#
# Idempotent and silent when there is nothing to do.  Environment knobs:
#   MTASKS_SKIP_APT=1     never call apt-get
#   MTASKS_STRICT=1       a service that cannot be started is an error, not a
#                         warning (the default when CI=true)
#   PYTHON                interpreter used to create .venv (default: python3)
#   MTASKS_PG_PORT / MTASKS_PG_CLUSTER   PostgreSQL port / cluster name (5432 / main)
# Writes .venv/test-env: MAINTENANCE_TASKS_TEST_DATABASE_URL=... when the test
# database is reachable, empty otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."

APT_PACKAGES=(redis-server postgresql chromium)
VENV=.venv
STAMP=$VENV/.installed-stamp
# .venv is installed again when one of these is newer than $STAMP: the project's
# metadata and dependency groups, and this script's way of installing them.
VENV_INPUTS=(pyproject.toml scripts/bootstrap.sh)
TEST_ENV=$VENV/test-env
REDIS_PORT=6379
PG_PORT=${MTASKS_PG_PORT:-5432}
PG_CLUSTER=${MTASKS_PG_CLUSTER:-main}
PG_DB=mtasks_test
PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/$PG_DB"
STRICT=${MTASKS_STRICT:-}
[[ -z $STRICT && ${CI:-} == true ]] && STRICT=1

say() { echo "bootstrap: $*" >&2; }
problem() { # fatal in strict mode, a warning otherwise
    if [[ -n $STRICT ]]; then say "ERROR: $*"; exit 1; fi
    say "WARNING: $*"
}
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif have sudo; then sudo "$@"
    else say "ERROR: need root (or sudo) to run: $*"; return 1
    fi
}

as_postgres() { # from / so postgres can always chdir
    if [[ $(id -un) == postgres ]]; then (cd / && "$@")
    elif [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@")
    elif have sudo; then (cd / && sudo -u postgres "$@")
    else say "ERROR: cannot run commands as user postgres"; return 1
    fi
}

wait_for() { # wait_for DESCRIPTION COMMAND...: poll for up to 30 s
    local what=$1 i
    shift
    for ((i = 0; i < 60; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    problem "$what not ready after 30 s"
    return 1
}

# --------------------------------------------------------------------- apt
step_apt() {
    [[ ${MTASKS_SKIP_APT:-} == 1 ]] && return 0
    local pkg missing=()
    # python3-venv only matters when .venv still has to be created with the system python
    if [[ ! -x $VENV/bin/pip ]] && ! "${PYTHON:-python3}" -c 'import ensurepip, venv' 2>/dev/null; then
        APT_PACKAGES+=(python3 python3-venv)
    fi
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# -------------------------------------------------------------------- venv
step_venv() {
    if [[ ! -x $VENV/bin/pip ]]; then
        say "creating $VENV"
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    # Install again when what is installed, or how, has changed since the last time.
    local input stale=
    [[ -f $STAMP ]] || stale=1
    for input in "${VENV_INPUTS[@]}"; do
        if [[ $input -nt $STAMP ]]; then stale=1; fi
    done
    [[ -n $stale ]] || return 0
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    # The development tools are a PEP 735 dependency group: `pip install --group`
    # needs pip >= 25.1 (Debian 12's venv starts with an older one).
    if ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (25, 1))'; then
        say "upgrading pip in $VENV (dependency groups need pip >= 25.1)"
        "$VENV/bin/python" -m pip install -q --upgrade 'pip>=25.1'
    fi
    say "installing the project into $VENV (pip install -e . --group dev)"
    "$VENV/bin/python" -m pip install -q -e . --group dev
    touch "$STAMP"
}

# ------------------------------------------------------------------- redis
redis_up() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

step_redis() {
    if ! have redis-server; then problem "redis-server is not installed"; return 0; fi
    redis_up && return 0
    say "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /tmp \
        --logfile "/tmp/mtasks-redis-$REDIS_PORT.log" ||
        { problem "redis-server failed to start, see /tmp/mtasks-redis-$REDIS_PORT.log"; return 0; }
    wait_for "redis on port $REDIS_PORT" redis_up || true
}

# ---------------------------------------------------------------- postgres
pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_sql() { psql -X -w -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

pg_trust_local_tcp() {
    local hba tmp
    hba=$(as_postgres psql -X -p "$PG_PORT" -tAc 'show hba_file' 2>/dev/null) ||
        hba=/etc/postgresql/$1/$PG_CLUSTER/pg_hba.conf
    if as_postgres grep -q 'added by flask-maintenance-tasks bootstrap' "$hba"; then
        problem "$hba already trusts localhost, yet connecting as postgres fails"
        return 1
    fi
    say "allowing password-less TCP connections from localhost in $hba"
    tmp=$(mktemp)
    {
        echo "host all all 127.0.0.1/32 trust  # added by flask-maintenance-tasks bootstrap"
        echo "host all all ::1/128 trust  # added by flask-maintenance-tasks bootstrap"
        as_postgres cat "$hba"
    } >"$tmp"
    # shellcheck disable=SC2016 # $1 is expanded by the inner sh
    as_postgres sh -c 'cat >"$1"' sh "$hba" <"$tmp" # rewrite in place: keeps owner and mode
    rm -f "$tmp"
    as_postgres psql -X -p "$PG_PORT" -qtAc 'select pg_reload_conf()' >/dev/null ||
        as_root pg_ctlcluster "$1" "$PG_CLUSTER" reload
    sleep 0.5
}

step_postgres() {
    mkdir -p "$VENV"
    : >"$TEST_ENV" # nothing reachable until proven otherwise
    if ! have pg_isready || ! have pg_ctlcluster; then
        problem "PostgreSQL is not installed: PostgreSQL tests will be skipped"
        return 0
    fi
    local version
    version=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name "$PG_CLUSTER" \
        -printf '%h\n' 2>/dev/null | xargs -rn1 basename | sort -V | tail -n1)
    if ! pg_up; then
        if [[ -n $version ]]; then
            say "starting PostgreSQL cluster $version/$PG_CLUSTER"
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start || true
        else
            version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' \
                2>/dev/null | sort -V | tail -n1)
            if [[ -z $version ]]; then problem "no PostgreSQL server binaries found"; return 0; fi
            say "creating PostgreSQL cluster $version/$PG_CLUSTER on port $PG_PORT"
            as_root pg_createcluster -p "$PG_PORT" "$version" "$PG_CLUSTER" --start >/dev/null || true
        fi
        wait_for "PostgreSQL on port $PG_PORT" pg_up || return 0
    fi
    if ! pg_sql -c 'select 1' >/dev/null 2>&1; then
        if [[ -z $version ]]; then problem "cannot connect to PostgreSQL as postgres"; return 0; fi
        pg_trust_local_tcp "$version" || return 0
        if ! wait_for "password-less PostgreSQL login" pg_sql -c 'select 1'; then return 0; fi
    fi
    if [[ $(pg_sql -tAc "select 1 from pg_database where datname='$PG_DB'") != 1 ]]; then
        say "creating database $PG_DB"
        createdb -w -h 127.0.0.1 -p "$PG_PORT" -U postgres "$PG_DB" ||
            { problem "could not create database $PG_DB"; return 0; }
    fi
    echo "MAINTENANCE_TASKS_TEST_DATABASE_URL=$PG_URL" >"$TEST_ENV"
}

# -------------------------------------------------------------------- main
steps=("$@")
((${#steps[@]})) || steps=(apt venv redis postgres)
for step in "${steps[@]}"; do
    case $step in
    apt | venv | redis | postgres) "step_$step" ;;
    *) say "unknown step '$step' (expected: apt venv redis postgres)"; exit 2 ;;
    esac
done
