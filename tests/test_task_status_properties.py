"""Any published status renders escaped everywhere, with no 5xx (Hypothesis).

A task's published mapping comes from code fed by users' data (a row's title, a CSV
cell), so its keys and values are any JSON: hostile markup, control characters,
lone surrogates refused by the mapping itself, very long and deeply nested values.
"""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_maintenance_tasks import InvalidStatus, TaskStatus
from flask_maintenance_tasks.models import runs_table
from tests.support.dashboard import Dashboard, add_run, text

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "\x1b[31m", "&amp;"]
TASK = "PublishingTask"

texts = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
mappings = st.dictionaries(
    st.one_of(texts, st.sampled_from(["step", "step_number", "step_total", "api_token"])),
    values,
    max_size=6,
)


def _keepable(mapping: dict[str, t.Any]) -> dict[str, t.Any] | None:
    """The mapping as ``self.status`` keeps it, or ``None`` when it refuses it."""
    status = TaskStatus()
    try:
        status.update(mapping)
    except InvalidStatus:
        return None
    return status.as_dict()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mapping=mappings)
def test_any_published_mapping_renders_escaped_without_a_server_error(app, mapping):
    kept = _keepable(mapping)
    if kept is None:
        return  # refused where it was given: it never reaches the table
    engine = app.extensions["sqlalchemy"].engine
    run_id = add_run(engine, TASK, "running", job_id="j", published=kept)
    try:
        web = Dashboard(app)
        pages = [
            web.get(f"/tasks/{TASK}", htmx=True),
            web.get(f"/tasks/{TASK}"),
            web.get("/", htmx=True),
            web.get(f"/runs/{run_id}.json"),
        ]
        for page in pages:
            assert page.status_code < 500
        html = text(pages[0])
        data = json.loads(text(pages[3]))
        for hostile in HOSTILE[:2]:
            assert hostile not in html  # escaped wherever it was published
        shown = data["published"]
        assert set(shown) == set(kept)
        for key in kept:
            if "token" in key.lower():
                assert shown[key] == "[FILTERED]"
    finally:
        with engine.begin() as connection:
            connection.execute(sa.delete(runs_table).where(runs_table.c.id == run_id))


@pytest.mark.parametrize("bad", [{"a": {1, 2}}, {"a": "\ud800"}, {"a": [object()]}, {1: "x"}])
def test_a_value_that_is_no_json_is_refused_where_it_is_given(bad):
    with pytest.raises(InvalidStatus):
        TaskStatus().update(bad)
