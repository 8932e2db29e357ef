"""Discovery of the tasks in the app's tasks package, and how they are named."""

from __future__ import annotations

import importlib
import sys
import textwrap
import typing as t
import uuid
from pathlib import Path

import pytest

from flask_maintenance_tasks import TaskNotFound
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.registry import Registry
from tests.testapp.maintenance import kinds
from tests.testapp.maintenance.nested import billing

TEST_APP_TASKS = "tests.testapp.maintenance"

TASK = """
from flask_maintenance_tasks import Task, no_collection


class {name}(Task):
    collection = no_collection()

    def process(self):
        pass
"""


@pytest.fixture
def make_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> t.Iterator[t.Callable[[dict[str, str]], str]]:
    """Write a package of modules (``{"a/b.py": source}``) and return its name."""
    created: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(files: dict[str, str]) -> str:
        name = f"unit_pkg_{uuid.uuid4().hex[:10]}"
        root = tmp_path / name
        root.mkdir()
        (root / "__init__.py").write_text(files.pop("__init__.py", ""))
        for path, source in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            for parent in target.relative_to(root).parents:
                init = root / parent / "__init__.py"
                if not init.exists():
                    init.write_text("")
            target.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        created.append(name)
        return name

    yield make
    for module in list(sys.modules):
        if module.split(".")[0] in created:
            del sys.modules[module]


def task_source(*names: str, extra: str = "") -> str:
    return "".join(TASK.format(name=name) for name in names) + textwrap.dedent(extra)


# -- the test app's package ----------------------------------------------------------


def test_finds_the_tasks_of_every_module_of_the_package() -> None:
    tasks = Registry(TEST_APP_TASKS).tasks()

    assert tasks["ListTask"] is kinds.ListTask
    assert tasks["SquaresTask"] is kinds.SquaresTask
    assert "CountItemsTask" in tasks
    assert "UnitOrderedItemsTask" in tasks


def test_task_in_a_sub_package_module_is_prefixed_by_the_sub_package_only() -> None:
    tasks = Registry(TEST_APP_TASKS).tasks()

    assert tasks["nested.FixInvoicesTask"] is billing.FixInvoicesTask
    assert billing.FixInvoicesTask.name == "nested.FixInvoicesTask"
    assert "FixInvoicesTask" not in tasks
    assert "nested.billing.FixInvoicesTask" not in tasks


def test_task_setting_its_name_is_found_under_that_name_only() -> None:
    tasks = Registry(TEST_APP_TASKS).tasks()

    assert tasks["CustomName"] is kinds.Renamed
    assert "Renamed" not in tasks


def test_classes_named_with_an_underscore_are_skipped() -> None:
    tasks = Registry(TEST_APP_TASKS).tasks()

    assert kinds._HelperBase not in tasks.values()
    assert [name for name in tasks if name.split(".")[-1].startswith("_")] == []


def test_tasks_are_listed_by_name() -> None:
    names = list(Registry(TEST_APP_TASKS).tasks())

    assert names == sorted(names)


def test_get_returns_a_task_by_name() -> None:
    assert Registry(TEST_APP_TASKS).get("nested.FixInvoicesTask") is billing.FixInvoicesTask


def test_get_of_an_unknown_name_raises_task_not_found() -> None:
    with pytest.raises(TaskNotFound, match=r"^Task 'NoSuchTask' not found\.") as caught:
        Registry(TEST_APP_TASKS).get("NoSuchTask")

    assert caught.value.name == "NoSuchTask"
    assert isinstance(caught.value, LookupError)


# -- packages written for a test -----------------------------------------------------


def test_tasks_at_any_depth_are_prefixed_by_their_package_path(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package(
        {
            "__init__.py": task_source("TopTask"),
            "top_module.py": task_source("ModuleTask"),
            "billing/__init__.py": task_source("PackageTask"),
            "billing/invoices/fix.py": task_source("DeepTask"),
        }
    )

    assert list(Registry(package).tasks()) == [
        "ModuleTask",
        "TopTask",
        "billing.PackageTask",
        "billing.invoices.DeepTask",
    ]


def test_task_imported_into_another_module_is_found_once(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package(
        {"a.py": task_source("SharedTask"), "b.py": "from .a import SharedTask\n"}
    )

    assert list(Registry(package).tasks()) == ["SharedTask"]


def test_two_tasks_with_one_name_are_an_error_naming_both(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({"a.py": task_source("CleanupTask"), "b.py": task_source("CleanupTask")})

    with pytest.raises(ConfigurationError) as caught:
        Registry(package).tasks()

    message = str(caught.value)
    assert "Two tasks are named 'CleanupTask'" in message
    assert f"{package}.a.CleanupTask" in message
    assert f"{package}.b.CleanupTask" in message


def test_explicit_name_taken_by_another_task_is_an_error(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    impostor = """
        from flask_maintenance_tasks import Task


        class Impostor(Task):
            name = "CleanupTask"
    """
    package = make_package({"a.py": task_source("CleanupTask"), "b.py": impostor})

    with pytest.raises(
        ConfigurationError, match=r"'CleanupTask': .*\.a\.CleanupTask and .*\.Impostor"
    ):
        Registry(package).tasks()


def test_abstract_task_is_skipped_but_its_subclasses_are_found(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package(
        {
            "base.py": """
                from flask_maintenance_tasks import Task


                class BaseTask(Task):
                    abstract = True
                    collection = [1]


                class ConcreteTask(BaseTask):
                    def process(self, n):
                        pass
            """
        }
    )

    assert list(Registry(package).tasks()) == ["ConcreteTask"]


def test_missing_tasks_package_means_no_tasks(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({})

    assert Registry(f"{package}.maintenance").tasks() == {}
    assert Registry("unit_no_such_app.maintenance").tasks() == {}
    assert Registry("unit_no_such_app.maintenance").package_paths() == []


def test_missing_module_imported_by_a_task_module_surfaces(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({"jobs.py": "import unit_no_such_dependency\n"})

    with pytest.raises(ModuleNotFoundError, match="unit_no_such_dependency"):
        Registry(package).tasks()


def test_missing_module_whose_name_prefixes_the_package_name_surfaces(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    # "unit_pkg" is a prefix of "unit_pkg_<hex>" but not one of its parent packages.
    package = make_package({"__init__.py": "import unit_pkg\n"})

    with pytest.raises(ModuleNotFoundError, match="unit_pkg"):
        Registry(package).tasks()


def test_error_raised_by_a_task_module_surfaces(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({"broken.py": "raise RuntimeError('typo in a task module')\n"})

    with pytest.raises(RuntimeError, match="typo in a task module"):
        Registry(package).tasks()


def test_discovery_happens_once_until_reload(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({"a.py": task_source("FirstTask")})
    registry = Registry(package)
    assert list(registry.tasks()) == ["FirstTask"]
    root = Path(importlib.import_module(package).__path__[0])
    (root / "b.py").write_text(task_source("SecondTask"))
    importlib.invalidate_caches()

    before_reload = list(registry.tasks())
    registry.reload()

    assert before_reload == ["FirstTask"]
    assert list(registry.tasks()) == ["FirstTask", "SecondTask"]


def test_package_paths_are_the_directories_of_the_tasks_package(
    make_package: t.Callable[[dict[str, str]], str],
) -> None:
    package = make_package({})

    assert Registry(package).package_paths() == list(importlib.import_module(package).__path__)
    assert Registry(f"{package}.maintenance").package_paths() == []


def test_a_task_added_later_is_found_and_a_broken_module_added_later_breaks_nothing(
    make_package, tmp_path: Path
) -> None:
    package = make_package({"first.py": TASK.format(name="FirstTask")})
    registry = Registry(package)
    assert list(registry.tasks()) == ["FirstTask"]
    (tmp_path / package / "second.py").write_text(TASK.format(name="SecondTask"))
    assert registry.get("SecondTask").__name__ == "SecondTask"  # looked for again
    (tmp_path / package / "third.py").write_text(TASK.format(name="ThirdTask"))
    (tmp_path / package / "broken.py").write_text("raise RuntimeError('a bug')\n")
    with pytest.raises(TaskNotFound):
        registry.get("ThirdTask")
    # The tasks known before the broken module came stay known.
    assert list(registry.tasks()) == ["FirstTask", "SecondTask"]
    assert registry.get("FirstTask").__name__ == "FirstTask"


def test_a_job_whose_tasks_package_fails_to_import_errors_its_run(
    app: t.Any, mtasks: t.Any, make_package, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a job failing again and again through recovery: the run errors, saying why."""
    from flask_maintenance_tasks.job import perform_run
    from flask_maintenance_tasks.state import get_state
    from tests.support.records import fresh_run

    run = mtasks.run("CountItemsTask")
    broken = make_package({"tasks.py": "raise RuntimeError('the tasks do not import')\n"})
    monkeypatch.setattr(get_state(), "registry", Registry(broken))
    perform_run(run.id, run.job_id)
    errored = fresh_run(run.id)
    assert errored.status == "errored"
    assert "the tasks do not import" in errored.error_message
