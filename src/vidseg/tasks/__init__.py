"""The tasks vidseg serves, registered by name (see :mod:`vidseg.tasks.registry`)."""

from vidseg.tasks.registry import TaskSpec, get_task, list_tasks, register_task

register_task(TaskSpec(
    name="vos",
    summary="semi-supervised video object segmentation (FEELVOS on DAVIS, J&F)",
    evaluate="vidseg.tasks.vos_entry:evaluate_vos",
    predict="vidseg.tasks.vos_entry:predict_vos",
    predictor="vidseg.inference.vos:VOSPredictor",
    module="vidseg.tasks.vos:VOSTask",
))
register_task(TaskSpec(
    name="vps",
    summary="video panoptic segmentation (Cityscapes-VPS / VIPER-VPS, VPQ and STQ)",
    evaluate="vidseg.tasks.vps_entry:evaluate_vps",
    predict="vidseg.tasks.vps_entry:predict_vps",
    predictor="vidseg.inference.vps:VPSPredictor",
    module="vidseg.tasks.vps:VPSTask",
))

__all__ = ["TaskSpec", "get_task", "list_tasks", "register_task"]
