"""Task docstrings in reStructuredText, shown as readable text: on the dashboard (the
index and the task page) and by ``flask mtasks list --long`` and ``show``."""

from __future__ import annotations

import re
import typing as t

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_maintenance_tasks import docstrings
from flask_maintenance_tasks.web.source import MIN_CONTRAST, _rgb, contrast, stylesheet
from tests.support.commands import Invoke
from tests.support.dashboard import Dashboard, text
from tests.testapp.maintenance.kinds import ListTask

DOC = """Backfills *every* row of ``items`` with **care**.

    See `Flask <https://flask.palletsprojects.com/>`_ and :class:`~flask_maintenance_tasks.Task`,
    an `interpreted` text, a `reference`_, a name_ and ``__init__`` and snake_case.

    Usage::

        flask mtasks run BackfillTask --arg limit=10
          <b>kept as written</b>

    Notes
    -----

    - the first *item*,
      on two lines
    - the second ``item``

    .. note:: Run it at night.

    .. _reference: https://example.com
    """


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


@pytest.fixture
def documented() -> t.Iterator[type[ListTask]]:
    """ListTask with the docstring ``DOC`` for the test."""
    saved = ListTask.__doc__
    ListTask.__doc__ = DOC
    yield ListTask
    ListTask.__doc__ = saved


# -- the text ----------------------------------------------------------------------


def test_inline_markup_is_taken_out_and_links_keep_their_address() -> None:
    [first, second, *_] = docstrings.blocks(DOC)

    assert first.texts == ("Backfills every row of items with care.",)
    assert second.texts == (
        "See Flask (https://flask.palletsprojects.com/) and Task, an interpreted text, "
        "a reference, a name and __init__ and snake_case.",
    )


def test_blocks_keep_their_shape() -> None:
    found = docstrings.blocks(DOC)

    assert [block.kind for block in found] == [
        "paragraph",
        "paragraph",
        "paragraph",
        "literal",
        "paragraph",
        "bullets",
        "paragraph",
    ]
    assert found[2].texts == ("Usage:",)
    assert found[3].texts == (
        "flask mtasks run BackfillTask --arg limit=10",
        "  <b>kept as written</b>",
    )
    assert found[4].texts == ("Notes",)  # a title, its underline gone
    assert found[5].texts == ("the first item, on two lines", "the second item")
    assert found[6].texts == ("Run it at night.",)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("A literal ``*not emphasis*``.", "A literal *not emphasis*."),
        ("Math: 2*3*4 and a*b.", "Math: 2*3*4 and a*b."),
        (r"An escaped \*star\*.", "An escaped *star*."),
        ("A `title <other-page>`_ inside the docs.", "A title inside the docs."),
        ("A role after: `text`:emphasis:.", "A role after: text."),
        ("Text ::", "Text"),
        ("", ""),
    ],
)
def test_inline_cases(written: str, read: str) -> None:
    assert docstrings.summary(written) == read


def test_plain_text_is_what_the_command_line_prints() -> None:
    shown = docstrings.plain_text(DOC)

    assert shown.splitlines()[:2] == ["Backfills every row of items with care.", ""]
    assert "    flask mtasks run BackfillTask --arg limit=10" in shown.splitlines()
    assert "- the first item, on two lines" in shown.splitlines()
    assert "``" not in shown and ":class:" not in shown and "_reference" not in shown


# -- the dashboard -----------------------------------------------------------------

#: The tags the docstring's box is made of; anything else there would be markup let in.
DOC_TAGS = re.compile(r'</?(?:div|p|ul|li)(?: class="task-doc")?>|<pre tabindex="0">|</pre>')


def doc_box(page: str) -> str:
    start = page.index('<div class="task-doc">')
    return page[start : page.index("</div>", start) + len("</div>")]


@pytest.mark.usefixtures("documented")
def test_the_task_page_shows_the_docstring_as_text(web: Dashboard) -> None:
    box = doc_box(text(web.get("/tasks/ListTask")))

    assert "<p>Backfills every row of items with care.</p>" in box
    assert "<li>the first item, on two lines</li>" in box
    assert "&lt;b&gt;kept as written&lt;/b&gt;" in box
    assert "``" not in box and ":class:" not in box and "<b>" not in box


@pytest.mark.usefixtures("documented")
def test_the_index_shows_each_tasks_summary(web: Dashboard) -> None:
    page = text(web.get("/"))

    assert '<p class="task-summary muted">Backfills every row of items with care.</p>' in page


FRAGMENTS = st.sampled_from(
    [
        "``",
        "`",
        "*",
        "**",
        "_",
        "__",
        ":",
        "::",
        "<",
        ">",
        "&",
        '"',
        "'",
        "\\",
        "|",
        "- ",
        "* ",
        "\n",
        "\n\n",
        "    ",
        ".. ",
        ".. note:: ",
        ".. code-block::",
        "-----",
        "<script>alert(1)</script>",
        "<b>",
        "https://x.test/?a=1&b=<2>",
        ":class:`~a.B`",
        "`t <u>`_",
        "word",
        " ",
        "\x00",
        "\x1b",
        "\u202e",
    ]
)
DOCSTRINGS = st.lists(FRAGMENTS | st.text(max_size=4), max_size=30).map("".join)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(doc=DOCSTRINGS)
def test_any_docstring_is_shown_escaped_without_an_error(web: Dashboard, doc: str) -> None:
    saved = ListTask.__doc__
    ListTask.__doc__ = doc
    try:
        task_page = web.get("/tasks/ListTask")
        index = web.get("/")
    finally:
        ListTask.__doc__ = saved

    assert task_page.status_code == 200 and index.status_code == 200
    page = text(task_page)
    if '<div class="task-doc">' in page:
        assert "<" not in DOC_TAGS.sub("", doc_box(page))
    for shown in (page, text(index)):
        assert "<script>alert" not in shown and "<b>" not in shown
    assert isinstance(docstrings.plain_text(doc), str)


# -- the command line --------------------------------------------------------------


@pytest.mark.usefixtures("documented")
def test_list_long_prints_each_tasks_summary_under_its_name(cli: Invoke) -> None:
    lines = cli("list", "--long").stdout.splitlines()

    at = next(n for n, line in enumerate(lines) if line.startswith("ListTask "))
    assert lines[at + 1] == "    Backfills every row of items with care."
    assert "Backfills" not in cli("list").stdout


@pytest.mark.usefixtures("documented")
def test_show_prints_the_description_as_plain_text(cli: Invoke) -> None:
    result = cli("show", "ListTask")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["ListTask", "", "Backfills every row of items with care."]
    assert "- the second item" in lines
    assert "Latest run: none (new)" in lines
    assert "``" not in result.stdout and "**" not in result.stdout


def test_show_of_an_unknown_task_is_an_error(cli: Invoke) -> None:
    result = cli("show", "NoSuchTask")

    assert result.exit_code == 1
    assert "NoSuchTask" in result.output


# -- the highlighted source's colours ------------------------------------------------


def test_every_colour_of_the_highlighted_source_is_legible() -> None:
    css = stylesheet()
    light, dark = css.split("@media (prefers-color-scheme: dark)")
    for part, background in ((light, "#f0f0f0"), (dark, "#0d1117")):
        for rule in part.splitlines():
            color = re.search(r"(?<![-\w])color: (#[0-9A-Fa-f]{3,6})", rule)
            own = re.search(r"background-color: (#[0-9A-Fa-f]{3,6})", rule)
            if color is None or ".hll" in rule:
                continue
            behind = own.group(1) if own else background
            assert contrast(_rgb(color.group(1)), _rgb(behind)) >= MIN_CONTRAST, rule
