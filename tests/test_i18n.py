"""Which language the dashboard and the commands speak, and the catalogue check.

The words themselves are tested where they are shown (tests/test_i18n_formatting.py,
tests/test_cli_languages.py, tests/browser/test_languages.py); here: how the
language is chosen (the host's Flask-Babel selector, else Accept-Language, else
the terminal's locale), that programs' output stays English, that a host
without Flask-Babel gets English, and that ``scripts/catalogues.py check``
fails on each kind of defect it promises to find.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import flask_babel
import pytest
from flask import Flask
from flask_babel import Babel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_maintenance_tasks import i18n
from flask_maintenance_tasks.formatting import status_name

ROOT = Path(__file__).resolve().parent.parent
INDEX = "/maintenance_tasks/"
JAPANESE_TITLE = "メンテナンスタスク"


def _title(body: bytes) -> str:
    text = body.decode()
    return text.split("<title>", 1)[1].split("</title>", 1)[0]


# -- in a request -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ja", "ja"),
        ("ja-JP,ja;q=0.9,en-US;q=0.8", "ja"),
        ("fr-FR, ja;q=0.5, en;q=0.2", "ja"),
        ("en-US,en;q=0.9,ja;q=0.8", "en"),
        ("de, fr", "en"),
        ("*", "en"),
        ("", "en"),
        ("ja;q=0", "en"),
    ],
)
def test_without_a_host_selector_the_request_accept_language_decides(
    app: Flask, header: str, expected: str
) -> None:
    client = app.test_client()
    response = client.get(INDEX, headers={"Accept-Language": header} if header else {})
    assert response.status_code == 200
    assert response.headers["Content-Language"] == expected
    assert "Accept-Language" in response.headers["Vary"]
    assert f'<html lang="{expected}">'.encode() in response.data
    title = _title(response.data)
    assert (JAPANESE_TITLE in title) == (expected == "ja"), title


def test_the_host_apps_babel_selector_wins_over_accept_language(app: Flask) -> None:
    chosen = {"locale": "ja"}

    Babel(app, locale_selector=lambda: chosen["locale"])
    client = app.test_client()
    response = client.get(INDEX, headers={"Accept-Language": "en-US"})
    assert response.headers["Content-Language"] == "ja"
    assert JAPANESE_TITLE in _title(response.data)
    # A language we do not ship: English, not the request's Japanese. (Flask-Babel keeps
    # its choice on g, which the fixture's app context shares between the test client's
    # requests; a server gives each request its own.)
    chosen["locale"] = "de_DE"
    flask_babel.refresh()
    response = client.get(INDEX, headers={"Accept-Language": "ja"})
    assert response.headers["Content-Language"] == "en"
    assert "Maintenance Tasks" in _title(response.data)
    # A territory of a shipped language.
    chosen["locale"] = "ja_JP"
    flask_babel.refresh()
    response = client.get(INDEX)
    assert response.headers["Content-Language"] == "ja"


@pytest.mark.parametrize("answer", ["english", "ja-JP-x-!!", 42, ""])
def test_a_host_selector_naming_no_locale_gives_english_not_an_error(
    app: Flask, answer: t.Any
) -> None:
    Babel(app, locale_selector=lambda: answer)
    response = app.test_client().get(INDEX, headers={"Accept-Language": "ja"})
    assert response.status_code == 200
    assert response.headers["Content-Language"] == "en"


def test_a_host_babel_without_a_selector_leaves_it_to_accept_language(app: Flask) -> None:
    Babel(app)  # the default selector always says BABEL_DEFAULT_LOCALE: not a choice
    response = app.test_client().get(INDEX, headers={"Accept-Language": "ja"})
    assert response.headers["Content-Language"] == "ja"


def test_the_host_apps_own_messages_do_not_leak_into_ours(app: Flask, tmp_path: Path) -> None:
    """A host with Flask-Babel's Jinja extension and its own catalogue: our templates
    still read from our catalogue (the host's ``_`` is not ours)."""
    host_catalogue = tmp_path / "translations" / "ja" / "LC_MESSAGES"
    host_catalogue.mkdir(parents=True)
    (host_catalogue / "messages.po").write_text(
        textwrap.dedent(
            """\
            msgid ""
            msgstr ""
            "Content-Type: text/plain; charset=utf-8\\n"
            "Language: ja\\n"

            msgid "Maintenance Tasks"
            msgstr "HOST TRANSLATION"
            """
        )
    )
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(tmp_path / "translations")
    Babel(app, locale_selector=lambda: "ja")
    response = app.test_client().get(INDEX)
    assert JAPANESE_TITLE in _title(response.data)
    assert b"HOST TRANSLATION" not in response.data


def test_programs_read_english_whatever_the_language(app: Flask) -> None:
    client = app.test_client()
    for path in ("/maintenance_tasks/api/v1/tasks", "/maintenance_tasks/metrics"):
        response = client.get(path, headers={"Accept-Language": "ja"})
        assert "Content-Language" not in response.headers, path
        assert not any("\u3040" <= c <= "\u30ff" for c in response.get_data(as_text=True)), path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=80))
def test_no_accept_language_header_breaks_a_page(app: Flask, header: str) -> None:
    response = app.test_client().get(INDEX, headers={"Accept-Language": header})
    assert response.status_code == 200
    assert response.headers["Content-Language"] in i18n.LOCALES


# -- outside a request --------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"LANGUAGE": "ja"}, "ja"),
        ({"LANGUAGE": "fr:ja:en"}, "ja"),
        ({"LANGUAGE": "", "LC_ALL": "ja_JP.UTF-8"}, "ja"),
        ({"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "ja_JP.eucJP"}, "ja"),
        ({"LANGUAGE": "", "LC_ALL": "C.UTF-8", "LANG": "ja_JP.UTF-8"}, "en"),
        ({"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "POSIX"}, "en"),
        ({"LANGUAGE": "en_GB", "LANG": "ja_JP.UTF-8"}, "en"),
        ({"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": ""}, "en"),
    ],
)
def test_a_command_follows_the_terminals_locale(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    app = Flask("terminal")
    with app.app_context():
        assert i18n.current_locale() == expected
        assert (status_name("running") == "実行中") == (expected == "ja")


@pytest.mark.parametrize("answer", ["en", None])
def test_a_command_follows_the_terminal_not_the_host_selector(
    monkeypatch: pytest.MonkeyPatch, answer: str | None
) -> None:
    monkeypatch.setenv("LANGUAGE", "ja")
    app = Flask("host")
    Babel(app, locale_selector=lambda: answer)
    with app.app_context():
        assert i18n.current_locale() == "ja"


def test_english_and_force_locale_hold_inside_their_block_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANGUAGE", "ja")
    with Flask("forced").app_context():
        assert i18n.gettext("All runs") == "すべての実行"
        with i18n.english():
            assert i18n.gettext("All runs") == "All runs"
            assert i18n.number(1234567) == "1,234,567"
            with i18n.force_locale("ja"):
                assert status_name("paused") == "一時停止"
        assert i18n.current_locale() == "ja"
    with pytest.raises(ValueError, match="not one of the shipped languages"):
        with i18n.force_locale("xx"):
            pass


def test_lazy_strings_follow_the_language_of_the_moment_they_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lazy = i18n.lazy_gettext("All runs")
    monkeypatch.setenv("LANGUAGE", "ja")
    with Flask("lazy").app_context():
        assert str(lazy) == "すべての実行"
        with i18n.english():
            assert str(lazy) == "All runs"
            assert lazy == "All runs"
            assert len(lazy) == len("All runs")
            assert lazy.upper() == "ALL RUNS"
            assert f"{lazy}!" == "All runs!"


def test_numbers_and_moments_are_written_for_the_language(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    moment = datetime(2026, 12, 1, 13, 2, 3, tzinfo=timezone.utc)
    with Flask("numbers").app_context():
        monkeypatch.setenv("LANGUAGE", "en")
        assert i18n.number(4000) == "4,000"
        assert i18n.number(1234.56, digits=1) == "1,234.6"
        assert i18n.moment(moment) == "2026-12-01 13:02:03 UTC"
        monkeypatch.setenv("LANGUAGE", "ja")
        assert i18n.number(4000) == "4,000"
        assert i18n.moment(moment) == "2026/12/01 13:02:03 UTC"


# -- without Flask-Babel --------------------------------------------------------------


def test_a_host_without_flask_babel_gets_english(app: Flask, app_env: dict[str, str]) -> None:
    """Flask-Babel (and Babel) made unimportable in a fresh interpreter: the dashboard
    and a command answer in English, whatever the request or the terminal ask for."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["flask_babel"] = None  # import flask_babel raises ImportError
        sys.modules["babel"] = None
        from tests.testapp import create_app
        from flask_maintenance_tasks import i18n
        from flask_maintenance_tasks.formatting import status_name
        app = create_app()
        assert not i18n.babel_available()
        response = app.test_client().get("{INDEX}", headers={{"Accept-Language": "ja"}})
        assert response.status_code == 200, response.status_code
        assert response.headers["Content-Language"] == "en"
        assert b"<title>Maintenance Tasks</title>" in response.data
        with app.app_context():
            assert i18n.current_locale() == "en"
            assert status_name("running") == "Running"
            assert i18n.number(1234567) == "1,234,567"
            assert i18n.number(2.5, digits=1) == "2.5"
            assert str(i18n.lazy_gettext("All runs")) == "All runs"
        print("english")
        """
    )
    environment = {**os.environ, **app_env, "LANGUAGE": "ja", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "english"


# -- the catalogue check --------------------------------------------------------------


@pytest.fixture
def catalogues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> t.Any:
    """``scripts/catalogues.py`` pointed at a copy of the package (edited by the test)."""
    spec = importlib.util.spec_from_file_location("catalogues", ROOT / "scripts" / "catalogues.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    package = tmp_path / "flask_maintenance_tasks"
    shutil.copytree(
        ROOT / "flask_maintenance_tasks",
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "PACKAGE", package)
    monkeypatch.setattr(module, "TRANSLATIONS", package / "translations")
    monkeypatch.setattr(module, "TEMPLATE", package / "translations" / f"{module.DOMAIN}.pot")
    return module


def _po(module: t.Any) -> Path:
    return t.cast(Path, module.TRANSLATIONS / "ja" / "LC_MESSAGES" / f"{module.DOMAIN}.po")


def test_the_shipped_catalogues_pass_the_check(
    catalogues: t.Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert catalogues.check() == 0, capsys.readouterr().err
    assert "every language complete" in capsys.readouterr().out


def test_the_check_fails_on_a_message_missing_from_the_catalogues(
    catalogues: t.Any, capsys: pytest.CaptureFixture[str]
) -> None:
    source = catalogues.PACKAGE / "i18n.py"
    source.write_text(source.read_text() + '\n\nNEW = gettext("A brand new message")\n')
    assert catalogues.check() == 1
    err = capsys.readouterr().err
    assert "new message not in the .pot: 'A brand new message'" in err
    assert "missing 'A brand new message'" in err
    # make messages adds it; it is then untranslated until someone translates it.
    assert catalogues.update() == 0
    assert catalogues.check() == 1
    assert "untranslated 'A brand new message'" in capsys.readouterr().err


def test_the_check_fails_on_a_stale_message(
    catalogues: t.Any, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = catalogues.PACKAGE / "web" / "templates" / "maintenance_tasks" / "layout.html"
    layout.write_text(layout.read_text().replace('{{ _("Skip to content") }}', "Skip"))
    assert catalogues.check() == 1
    err = capsys.readouterr().err
    assert "the .pot holds a message the code no longer has: 'Skip to content'" in err
    assert "stale 'Skip to content'" in err


def test_the_check_fails_on_a_fuzzy_or_emptied_translation(
    catalogues: t.Any, capsys: pytest.CaptureFixture[str]
) -> None:
    po = _po(catalogues)
    text = po.read_text()
    text = text.replace('msgid "All runs"\nmsgstr "すべての実行"', 'msgid "All runs"\nmsgstr ""')
    text = text.replace('msgid "Live refresh"', '#, fuzzy\nmsgid "Live refresh"')
    po.write_text(text)
    assert catalogues.check() == 1
    err = capsys.readouterr().err
    assert "untranslated 'All runs'" in err
    assert "fuzzy 'Live refresh'" in err


def test_the_check_fails_on_a_placeholder_the_translation_lost(
    catalogues: t.Any, capsys: pytest.CaptureFixture[str]
) -> None:
    source = catalogues.PACKAGE / "i18n.py"
    source.write_text(source.read_text() + '\n\nNEW = gettext("Ran for %(time)s.")\n')
    assert catalogues.update() == 0
    po = _po(catalogues)
    po.write_text(
        po.read_text().replace(
            'msgid "Ran for %(time)s."\nmsgstr ""', 'msgid "Ran for %(time)s."\nmsgstr "実行時間"'
        )
    )
    assert catalogues.check() == 1
    assert "'Ran for %(time)s.': placeholders differ: %(time)s is missing" in (
        capsys.readouterr().err
    )


def test_a_fuzzy_translation_is_not_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fuzzy entry says is a guess: English is shown instead (as msgfmt leaves
    fuzzy entries out)."""
    copy = tmp_path / "translations"
    shutil.copytree(i18n.TRANSLATIONS, copy)
    po = copy / "ja" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    po.write_text(po.read_text().replace('msgid "Live refresh"', '#, fuzzy\nmsgid "Live refresh"'))
    monkeypatch.setattr(i18n, "TRANSLATIONS", copy)
    monkeypatch.setenv("LANGUAGE", "ja")
    i18n.translations.cache_clear()
    try:
        with Flask("fuzzy").app_context():
            assert i18n.gettext("Live refresh") == "Live refresh"
            assert i18n.gettext("All runs") == "すべての実行"
    finally:
        i18n.translations.cache_clear()
