"""The task registry: every entry point reaches a task through it."""

from __future__ import annotations

import pytest

from vidseg.tasks import TaskSpec, get_task, list_tasks, register_task


def test_both_tasks_are_registered_and_their_callables_import():
    assert list_tasks() == ["vos", "vps"]
    for name in list_tasks():
        spec = get_task(name)
        assert callable(spec.load("evaluate")) and callable(spec.load("predict"))
    assert get_task("vos").load("module").__name__ == "VOSTask"
    assert get_task("vos").load("predictor").__name__ == "VOSPredictor"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'vis'.*vos\|vps"):
        get_task("vis")


def test_a_task_without_a_model_says_so():
    with pytest.raises(LookupError, match="vps.*no module"):
        get_task("vps").load("module")


def test_names_are_unique():
    with pytest.raises(ValueError, match="already registered"):
        register_task(TaskSpec("vos", "again", evaluate="x:y", predict="x:y"))
