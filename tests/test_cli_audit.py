"""The audit trail on the command line: who acted (the OS user, ``--as``) and ``status RUN``."""

from __future__ import annotations

import json

from flask import Flask

from flask_maintenance_tasks import audit
from tests.support.commands import Invoke
from tests.support.records import assert_trail_agrees, trail
from tests.support.workers import drain

USER = audit.os_user()


def test_commands_record_the_os_user_and_who_they_act_for(app: Flask, cli: Invoke) -> None:
    started = cli("run", "SquaresTask", "--as", "ticket-42")
    assert started.exit_code == 0, started.output
    run_id = int(started.output.strip())
    assert cli("pause", str(run_id)).exit_code == 0
    refused = cli("resume", str(run_id), "--as", "ticket-42")
    assert refused.exit_code == 1
    drain(app)

    assert trail(run_id) == [
        ("started", "done", f"ticket-42 ({USER})"),
        ("pause_requested", "done", USER),
        ("resumed", "refused", f"ticket-42 ({USER})"),
        ("paused", "done", "worker"),
    ]
    assert_trail_agrees(run_id)


def test_status_of_a_run_shows_its_history(app: Flask, cli: Invoke) -> None:
    run_id = int(cli("run", "SquaresTask", "--as", "ada").output.strip())
    drain(app)

    shown = cli("status", str(run_id))
    assert shown.exit_code == 0, shown.output
    history = shown.output[shown.output.index("History:") :].splitlines()[1:]
    assert [line.split(" UTC  ", 1)[1] for line in history] == [
        f"Started by ada ({USER}) (cli, {audit.host()})",
        f"Began by worker (engine, {audit.host()})",
        f"Succeeded by worker (engine, {audit.host()})",
    ]

    data = json.loads(cli("status", str(run_id), "--json").output)
    assert [(e["action"], e["origin"]) for e in data["events"]] == [
        ("started", "cli"),
        ("began", "engine"),
        ("succeeded", "engine"),
    ]
    assert data["started_by"] == f"ada ({USER})"
