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
    assert get_task("vps").load("module").__name__ == "VPSTask"
    assert get_task("vps").load("predictor").__name__ == "VPSPredictor"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'vis'.*vos\|vps"):
        get_task("vis")


def test_a_missing_entry_says_so():
    spec = TaskSpec("nomodel", "a task without a trainable model", evaluate="x:y", predict="x:y")
    with pytest.raises(LookupError, match="'nomodel' has no module"):
        spec.load("module")


def test_names_are_unique():
    with pytest.raises(ValueError, match="already registered"):
        register_task(TaskSpec("vos", "again", evaluate="x:y", predict="x:y"))
