"""Containment: no name read from a data file, split file, id or config value makes vidseg read or write outside
the folders it was given (issue 15, point 3; README "Safety").

Two layers, because either alone misses something:

- a source scan (AST) of src/vidseg finds every ``folder / <name>`` join and fails, listing them, on any whose
  name is not a literal, a checked name (``checked_join`` / ``check_name`` / ``check_relative_path``) or one of
  a few safe sources allowed below with the reason. A new reader that forgets the check fails here first.
- behavioural tests craft a ``../`` entry for each reader, scorer and writer (DAVIS split file, YouTube-VOS
  meta.json, Cityscapes-VPS / VIPER JSON file names, image ids and video ids, pred.json, clip records, split
  config values), aimed at a real file outside the dataset, and assert the one-line refusal naming the file
  and that nothing outside was opened, listed, created or changed (``tests.helpers.containment``).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vidseg
from tests.helpers.file_access import record_file_access
from tests.helpers.toy_vps import copy_toy_vps
from tests.helpers.vps_submission import submission_from_ground_truth
from vidseg.data.davis import DavisEvalDataset, DavisTrainDataset
from vidseg.data.davis_layout import list_sequences, sequence_paths
from vidseg.data.vps_layout import CITYSCAPES_VPS, VIPER
from vidseg.data.youtube_vos import YouTubeVOSEvalDataset, YouTubeVOSTrainDataset
from vidseg.data.youtube_vos_layout import ground_truth_dir, list_videos, load_video, read_meta
from vidseg.errors import DataError

# ============================================================================================ source scan

SRC = Path(vidseg.__file__).parent
# Generators write names they make themselves from their parameters and read no data file; names.py is the check.
SKIP_MODULES = {"data/toy.py", "data/toy_vps.py", "data/names.py"}
CHECKS = {"checked_join", "check_name", "check_relative_path"}
# A left operand with such a name is a folder (the scan cannot infer types; numeric code uses other names).
PATHISH = re.compile(r"(^|_)(dir|dirpath|root|path|folder|out|output|staging|submission|file|parent|parents)$")
# Right operands that are neither literals nor checked, and why each is safe. Keep this list short: a name
# from a data file, an id or a config value belongs in checked_join, not here.
ALLOWED = {
    # The names of vidseg's own output files and folders (output / "overlay.mp4", "masks", "panoptic", ...).
    ("tasks/vos_entry.py", "overlay_path.name"),
    ("tasks/vos_entry.py", "masks_dir.name"),
    ("tasks/vps_entry.py", "overlay_path.name"),
    ("tasks/vps_entry.py", "panoptic_dir.name"),
    ("tasks/vps_entry.py", "segments_dir.name"),
    # k: the protocol's window sizes, ints defined in vidseg.metrics.vpq.
    ("metrics/vps_eval.py", "f'vpq-{k}.txt'"),
    # In an error message only (nothing is opened): a frame stem of the results folder, or a literal.
    ("metrics/davis_eval.py", "paths[0].stem if paths else '00000'"),
    # variant: one of the demo's VPS_VARIANTS constant.
    ("demo.py", "f'train_{variant}'"),
    ("demo.py", "f'evaluate_{variant}'"),
    # The web app's own names: task is the tab ("vos" | "vps") and number an int, the upload's suffix one of
    # VIDEO_SUFFIXES (checked before), zip_folders' names the app's output folders ("masks", "panoptic", "segments").
    ("app/runs.py", "f'{task}-run-{number}'"),
    ("app/runs.py", "name"),
    ("app/inputs.py", "f'{task}-input{upload.suffix.lower()}'"),
}


def _identifier(node: ast.AST) -> str:
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _stringy(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _is_join(node: ast.BinOp) -> bool:
    """``a / b`` that builds a path: a string on the right, or a folder-like left operand."""
    if _stringy(node.right):
        return True
    right = node.right
    if isinstance(right, ast.Subscript) and _identifier(right.value) == "shape":
        return False  # out / x.shape[1]: a tensor divided by a size
    left = node.left
    while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div):
        if _stringy(left.right):
            return True
        left = left.left
    name = _identifier(left)
    return name in {"Path", "PurePath", "PurePosixPath", *CHECKS} or bool(PATHISH.search(name))


def _int_field(value: ast.FormattedValue) -> bool:
    spec = value.format_spec
    return (isinstance(spec, ast.JoinedStr) and len(spec.values) == 1 and isinstance(spec.values[0], ast.Constant)
            and str(spec.values[0].value).endswith("d"))


def _safe_name(node: ast.AST, loop_literals: set[str]) -> bool:
    """A right operand that cannot leave its folder whatever the data says."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.Call) and _identifier(node) in CHECKS:
        return True
    if isinstance(node, (ast.Name, ast.Attribute)) and _identifier(node).isupper():
        return True  # a module constant (LAST_NAME, META_FILE)
    if isinstance(node, ast.Name) and node.id in loop_literals:
        return True  # for kind in ("JPEGImages", "Annotations")
    if isinstance(node, ast.JoinedStr):
        # "{i:05d}.png": digits; "{path.stem}.png": a stem has no "/" and the literal suffix rules out "..".
        fields = [v for v in node.values if isinstance(v, ast.FormattedValue)]
        suffix = node.values[-1] if node.values else None
        has_suffix = isinstance(suffix, ast.Constant) and bool(suffix.value)
        return all(_int_field(v) or (has_suffix and isinstance(v.value, ast.Attribute) and v.value.attr == "stem")
                   for v in fields)
    return False


def _loop_literals(func: ast.AST) -> set[str]:
    """Loop variables that only take string literals: ``for kind in ("JPEGImages", "Annotations")``."""
    names = set()
    for node in ast.walk(func):
        if (isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                and isinstance(node.iter, (ast.Tuple, ast.List)) and all(_stringy(e) for e in node.iter.elts)
                and not any(isinstance(e, ast.JoinedStr) for e in node.iter.elts)):
            names.add(node.target.id)
    return names


def unchecked_joins(source: str, module: str) -> list[str]:
    """``module:line: code`` of every path join in ``source`` whose name is not literal, checked or allowed."""
    tree = ast.parse(source)
    literals: dict[int, set[str]] = {}  # node -> loop variables over literals of its innermost function
    for func in ast.walk(tree):  # outer functions come first, so inner ones overwrite them
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = _loop_literals(func)
            literals.update((id(node), names) for node in ast.walk(func))
    found = []
    for node in ast.walk(tree):
        bad = False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _is_join(node):
            bad = (not _safe_name(node.right, literals.get(id(node), set()))
                   and (module, ast.unparse(node.right)) not in ALLOWED)
        elif isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            built = callee in {"Path", "PurePath", "PurePosixPath"} and any(
                isinstance(a, (ast.JoinedStr, ast.BinOp)) for a in node.args)  # Path(f"{root}/{name}")
            joined = callee == "os.path.join" or callee.endswith(".joinpath")
            bad = built or (joined and not all(_stringy(a) for a in node.args))
        if bad:
            found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_every_path_join_in_src_goes_through_the_check():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        if module not in SKIP_MODULES:
            found += unchecked_joins(path.read_text(), module)
    assert not found, ("path joins whose name could come from a data file, an id or a config value; build them "
                       "with vidseg.data.names.checked_join (or add a justified ALLOWED entry):\n" + "\n".join(found))


@pytest.mark.parametrize("code", [
    'png = png_dir / f"{image_id}.png"',                      # the VPS scorer's hole before the fix
    "seq_dir = results_dir / seq",
    'png = self.gt_dir / ann.get("file_name")',               # validation during training's hole
    'path = Path(root) / str(split) / "meta.json"',
    'record = clip_dir / f"{video}.json"',
    'path = os.path.join(root, name)',
    'path = Path(f"{root}/{name}")',
    'img = root.joinpath("JPEGImages", seq)',
])
def test_the_scan_finds_unchecked_joins(code):
    # The scan itself must catch the plausible mistakes, or the test above proves nothing.
    assert unchecked_joins(f"def f():\n    {code}\n", "x.py")


@pytest.mark.parametrize("code", [
    'png = checked_join(png_dir, f"{image_id}.png", source=p, what="image id")',
    'png = staging / "masks" / f"{index:05d}.png"',
    'png = seq_dir / f"{gt_path.stem}.png"',
    "path = self.dirpath / LAST_NAME",
    'png = png_dir / check_relative_path(name, source=p)',
    "ratio = inter / union",
])
def test_the_scan_accepts_checked_and_literal_joins(code):
    assert unchecked_joins(f"def f():\n    {code}\n", "x.py") == []


def test_the_scan_knows_loop_variables_over_literals():
    code = 'def f(root):\n    for kind in ("JPEGImages", "Annotations"):\n        x = root / kind\n'
    assert unchecked_joins(code, "x.py") == []
    assert unchecked_joins(code.replace('("JPEGImages", "Annotations")', "names"), "x.py")


# ======================================================================================= behavioural tests

ESC = "../../../outside/"  # from <root>/<split>/<folder>/ (or <root>/JPEGImages/480p/) to <tmp>/outside/


@contextlib.contextmanager
def reads_under(folder: Path) -> Iterator[list[str]]:
    """Yield a list that gets every path under ``folder`` opened, listed or changed inside the block."""
    found: list[str] = []
    with record_file_access() as accesses:
        yield found
    root = os.path.realpath(folder)
    found += [a.path for a in accesses if (os.path.realpath(a.path) + os.sep).startswith(root + os.sep)]


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: proves that nothing there was created or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _assert_refused(err: pytest.ExceptionInfo, *named: object) -> None:
    """The one-line refusal of the check, naming the file (or config key) the name came from."""
    message = str(err.value)
    assert isinstance(err.value, DataError), f"{type(err.value).__name__}: {message}"
    assert "refusing" in message and "\n" not in message, message
    for thing in named:
        assert str(thing) in message, (thing, message)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------------------ VPS datasets and training

def _vps_root(make_toy_vps, fmt: str, tmp_path: Path) -> Path:
    return copy_toy_vps(make_toy_vps(fmt), tmp_path / "root")


def _escape_gt_annotation_file_name(root: Path, layout, outside: Path) -> Path:
    gt = layout.panoptic_gt_json(root, "val")

    def edit(data):
        name = data["annotations"][0]["file_name"]
        shutil.copy(layout.panoptic_gt_dir(root, "val") / name, outside / name)  # readable if reached
        data["annotations"][0]["file_name"] = ESC + name
    _edit_json(gt, edit)
    return gt


def _escape_gt_image_file_name(root: Path, layout, outside: Path) -> Path:
    # Without an annotation file_name the GT PNG name comes from the image's file_name (Cityscapes-VPS).
    gt = layout.panoptic_gt_json(root, "val")

    def edit(data):
        image = data["images"][0]
        ann = next(a for a in data["annotations"] if a["image_id"] == image["id"])
        png = ann.pop("file_name")
        shutil.copy(layout.panoptic_gt_dir(root, "val") / png, outside / png)
        image["file_name"] = ESC + image["file_name"]
    _edit_json(gt, edit)
    return gt


def _escape_frame_file_name(root: Path, layout, outside: Path) -> Path:
    frames = layout.frames_json(root, "val")

    def edit(data):
        name = data["images"][1]["file_name"]
        shutil.copy(layout.image_dir(root, "val", all_frames=True) / name, outside / name)
        data["images"][1]["file_name"] = ESC + name
    _edit_json(frames, edit)
    return frames


def _escape_frame_video_id(root: Path, layout, outside: Path) -> Path:
    frames = layout.frames_json(root, "val")
    _edit_json(frames, lambda data: data["images"][0].update(video_id="../../outside"))
    return frames


def _escape_train_file_name(root: Path, layout, outside: Path) -> Path:
    instances = layout.instances_json(root, "train")

    def edit(data):
        name = data["images"][0]["file_name"]
        shutil.copy(layout.image_dir(root, "train") / name, outside / Path(name).name)
        data["images"][0]["file_name"] = ESC + Path(name).name
    _edit_json(instances, edit)
    return instances


def _escape_train_video_id(root: Path, layout, outside: Path) -> Path:
    instances = layout.instances_json(root, "train")
    _edit_json(instances, lambda data: data["images"][0].update(video_id="../outside"))
    return instances


VPS_ESCAPES = {
    "gt-annotation-file_name": _escape_gt_annotation_file_name,
    "gt-image-file_name": _escape_gt_image_file_name,
    "frames-file_name": _escape_frame_file_name,
    "frames-video_id": _escape_frame_video_id,
    "train-file_name": _escape_train_file_name,
    "train-video_id": _escape_train_video_id,
}


@pytest.mark.parametrize("escape,fmt", [
    (escape, fmt) for escape in sorted(VPS_ESCAPES) for fmt in ("cityscapes_vps", "viper")
    # VIPER's GT PNG name is the basename of the image file name: no folder part to escape with.
    if (escape, fmt) != ("gt-image-file_name", "viper")])
def test_vps_training_and_its_validation_refuse_escaping_names(make_toy_vps, tmp_path, outside, fmt, escape):
    # setup("fit") builds what training reads: the training pairs and the validation clips (the val GT JSON
    # was read outside the root here before, although `evaluate` refused the same file).
    from vidseg.data.cityscapes_vps import CityscapesVPSDataModule
    from vidseg.data.viper import ViperDataModule

    layout = {"cityscapes_vps": CITYSCAPES_VPS, "viper": VIPER}[fmt]
    root = _vps_root(make_toy_vps, fmt, tmp_path)
    crafted = VPS_ESCAPES[escape](root, layout, outside)
    module = {"cityscapes_vps": CityscapesVPSDataModule, "viper": ViperDataModule}[fmt](root, crop_size=(32, 64))
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        module.setup("fit")
    _assert_refused(err, crafted)
    assert touched == []


# ------------------------------------------------------------------------------------------ VPS scoring

@pytest.fixture
def vps_gt_and_submission(toy_cityscapes_vps_root, tmp_path):
    root = copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "root")
    submission = submission_from_ground_truth(root, CITYSCAPES_VPS, "val", tmp_path / "submission")
    return root, submission


def _score(root: Path, submission: Path):
    from vidseg.metrics.vps_eval import evaluate_submission, load_ground_truth

    return evaluate_submission(load_ground_truth(CITYSCAPES_VPS, root, "val"), submission, workers=1)


def test_vps_scoring_refuses_a_gt_image_id_that_leaves_pan_pred(vps_gt_and_submission, outside):
    # pan_pred/<image id>.png with id "../../outside/x" would read (and score) a PNG the submission does not hold.
    root, submission = vps_gt_and_submission
    gt_path = CITYSCAPES_VPS.panoptic_gt_json(root, "val")

    def edit(data):
        image = data["images"][0]
        shutil.copy(submission / "pan_pred" / f"{image['id']}.png", outside / "x.png")
        for ann in data["annotations"]:
            if ann["image_id"] == image["id"]:
                ann["image_id"] = "../../outside/x"
        image["id"] = "../../outside/x"
    _edit_json(gt_path, edit)
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        _score(root, submission)
    _assert_refused(err, gt_path, "../../outside/x")
    assert touched == []


@pytest.mark.parametrize("field", ["image file_name", "annotation file_name", "video_id"])
def test_vps_scoring_refuses_escaping_gt_names(vps_gt_and_submission, outside, field):
    root, submission = vps_gt_and_submission
    gt_path = CITYSCAPES_VPS.panoptic_gt_json(root, "val")

    def edit(data):
        image, ann = data["images"][0], data["annotations"][0]
        png = ann["file_name"]
        shutil.copy(CITYSCAPES_VPS.panoptic_gt_dir(root, "val") / png, outside / png)
        if field == "image file_name":
            image["file_name"] = "../../../outside/" + image["file_name"]
        elif field == "annotation file_name":
            ann["file_name"] = "../../../outside/" + png
        else:
            image["video_id"] = "../outside"
    _edit_json(gt_path, edit)
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        _score(root, submission)
    _assert_refused(err, gt_path)
    assert touched == []


def test_vps_scoring_never_follows_pred_json_names(vps_gt_and_submission, outside, tmp_path):
    # pred.json's image_id is matched against the GT ids (never joined); its file_name is not read at all.
    root, submission = vps_gt_and_submission
    pred = json.loads((submission / "pred.json").read_text())
    gt = json.loads(CITYSCAPES_VPS.panoptic_gt_json(root, "val").read_text())
    first = submission / "pan_pred" / f"{gt['images'][0]['id']}.png"
    shutil.copy(first, outside / "x.png")
    for entry, image in zip(pred["annotations"], gt["images"], strict=True):
        entry.update(image_id=image["id"], file_name="../../outside/x.png")
    (submission / "pred.json").write_text(json.dumps(pred))
    with reads_under(outside) as touched:
        results = _score(root, submission)
    assert touched == [] and results.num_frames == len(gt["images"])

    from vidseg.metrics.vps_eval import write_vps_results

    before = files_under(tmp_path)
    with pytest.raises(DataError) as err:  # a split name becomes results-<split>.json
        write_vps_results(results, tmp_path / "eval", "../../outside/x")
    _assert_refused(err, "data.split")
    assert files_under(tmp_path) == before

    pred["annotations"][0]["image_id"] = "../../outside/x"
    (submission / "pred.json").write_text(json.dumps(pred))
    with reads_under(outside) as touched, pytest.raises(DataError, match="not a GT image"):
        _score(root, submission)
    assert touched == []


# ------------------------------------------------------------------------------------------ VPS writers

class _Clips:
    """A stand-in evaluation dataset: predict_clips asks only for the clip of every item and the length."""

    def __init__(self, videos: list[str]) -> None:
        self._videos = videos

    def videos(self) -> list[str]:
        return self._videos

    def __len__(self) -> int:
        return len(self._videos)


def test_vps_clip_records_and_video_ids_stay_in_the_submission(tmp_path, outside):
    from vidseg.tasks.vps_entry import predict_clips

    submission = tmp_path / "submission"
    (submission / "clips").mkdir(parents=True)
    (outside / "x.png").write_bytes(b"sentinel")
    (outside / "v.json").write_text("sentinel")  # predict_clips deletes a stale record of its video
    before = files_under(tmp_path)
    # A clip record (written by an earlier run, but a file in the output folder) listing an escaping image id.
    (submission / "clips" / "0001.json").write_text(json.dumps(
        {"video": "0001", "fingerprint": "f", "frames": {"../../outside/x": []}}))
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        predict_clips(None, _Clips(["0001"]), submission, fingerprint="f", to_json={})
    _assert_refused(err, "clips/0001.json")
    assert touched == []
    # A video id from the frames JSON that leaves clips/.
    with pytest.raises(DataError) as err:
        predict_clips(None, _Clips(["../../outside/v"]), submission, fingerprint="f", to_json={})
    _assert_refused(err, "video id")
    after = files_under(tmp_path)
    assert {k: v for k, v in after.items() if "outside" in k} == {k: v for k, v in before.items() if "outside" in k}


def test_demo_baseline_refuses_an_image_id_that_leaves_pan_pred(toy_cityscapes_vps_root, tmp_path, outside):
    from vidseg.demo import write_first_frame_baseline

    root = copy_toy_vps(toy_cityscapes_vps_root, tmp_path / "root")
    gt_path = CITYSCAPES_VPS.panoptic_gt_json(root, "val")

    def edit(data):
        image = data["images"][-1]
        for ann in data["annotations"]:
            if ann["image_id"] == image["id"]:
                ann["image_id"] = "../../outside/escape"
        image["id"] = "../../outside/escape"
    _edit_json(gt_path, edit)
    with pytest.raises(DataError) as err:
        write_first_frame_baseline(root, "val", tmp_path / "baseline")
    _assert_refused(err, gt_path)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------------------------------ DAVIS

@pytest.fixture
def davis_root(toy_davis_root, tmp_path) -> Path:
    return Path(shutil.copytree(toy_davis_root, tmp_path / "root"))


@pytest.mark.parametrize("dataset,split", [(DavisEvalDataset, "val"), (DavisTrainDataset, "train")])
def test_davis_split_file_cannot_name_a_folder_outside(davis_root, outside, dataset, split):
    # The split file lists ../../../outside/<seq>, and a real sequence (frames and masks) waits there.
    split_file = davis_root / "ImageSets" / "2017" / f"{split}.txt"
    seq = split_file.read_text().split()[0]
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(davis_root / kind / "480p" / seq, outside / seq, dirs_exist_ok=True)
    split_file.write_text(f"{ESC}{seq}\n")
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        dataset(davis_root, split=split)
    _assert_refused(err, split_file, ESC + seq)
    assert touched == []


def test_davis_scoring_and_writing_stay_in_their_folders(davis_root, tmp_path, outside):
    from vidseg.metrics.davis_eval import evaluate_folder, write_results
    from vidseg.tasks.vos_entry import predict_davis

    seq = list_sequences(davis_root, split="val")[0]
    gt = sequence_paths(davis_root, seq)[1]
    results_dir = tmp_path / "results"
    shutil.copytree(davis_root / "Annotations" / "480p", results_dir)  # a perfect results folder
    shutil.copytree(results_dir / seq, outside / seq)
    # A sequence name (a key of the mapping, e.g. from another split file) that leaves the results folder.
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        evaluate_folder({f"../outside/{seq}": gt}, results_dir, workers=1)
    _assert_refused(err, results_dir)
    assert touched == []

    results = evaluate_folder({seq: gt}, results_dir, workers=1)
    before = files_under(tmp_path)
    with pytest.raises(DataError) as err:  # data.split names the result files
        write_results(results, tmp_path / "eval", "../../outside/x", plots=False)
    _assert_refused(err, "data.split")
    # predict_davis writes <masks>/<seq>/: a sequence name that leaves it is refused before any frame is read.
    with reads_under(outside) as touched, pytest.raises(DataError):
        predict_davis(None, davis_root, [f"{ESC}{seq}"], tmp_path / "masks", fingerprint="f")
    assert touched == [] and files_under(tmp_path) == before


BAD_SPLIT = "../../outside/x"
CONFIG_VALUES = {
    "davis-split": lambda root: list_sequences(root, split=BAD_SPLIT),
    "davis-year": lambda root: list_sequences(root, year="../.."),
    "davis-resolution": lambda root: list_sequences(root, resolution="../../outside"),
    "davis-sequence": lambda root: sequence_paths(root, "../x"),
    "youtube_vos-meta": lambda root: read_meta(root, BAD_SPLIT),
    "youtube_vos-videos": lambda root: list_videos(root, BAD_SPLIT),
    "youtube_vos-load": lambda root: load_video(root, BAD_SPLIT, "v"),
    "youtube_vos-ground-truth": lambda root: ground_truth_dir(root, BAD_SPLIT, []),
    "youtube_vos-train": lambda root: YouTubeVOSTrainDataset(root, split=BAD_SPLIT, videos=["v"]),
    **{f"{layout.name}-{method}": (lambda root, layout=layout, method=method: getattr(layout, method)(root, BAD_SPLIT))
       for layout in (CITYSCAPES_VPS, VIPER)
       for method in ("panoptic_gt_json", "panoptic_gt_dir", "instances_json", "frames_json", "image_dir",
                      "labelmap_dir", "panoptic_inst_dir")},
}


@pytest.mark.parametrize("key", sorted(CONFIG_VALUES))
def test_config_values_that_name_a_file_inside_the_root_are_checked(tmp_path, key):
    # data.split / data.year / data.resolution become folder and file names under data.root.
    (tmp_path / "root").mkdir()
    with reads_under(tmp_path) as touched, pytest.raises(DataError) as err:
        CONFIG_VALUES[key](tmp_path / "root")
    _assert_refused(err)
    assert touched == []


# ------------------------------------------------------------------------------------------ YouTube-VOS

@pytest.fixture
def youtube_vos_root(toy_youtube_vos_root, tmp_path) -> Path:
    return Path(shutil.copytree(toy_youtube_vos_root, tmp_path / "root"))


@pytest.mark.parametrize("split", ["train", "valid"])
@pytest.mark.parametrize("entry", ["video id", "frame name"])
def test_youtube_vos_meta_json_cannot_name_files_outside(youtube_vos_root, outside, split, entry):
    meta = youtube_vos_root / split / "meta.json"
    data = json.loads(meta.read_text())
    video = sorted(data["videos"])[0]
    shutil.copytree(youtube_vos_root / split / "JPEGImages" / video, outside / video)
    if entry == "video id":
        data["videos"][ESC + video] = data["videos"].pop(video)
    else:
        obj = next(iter(data["videos"][video]["objects"].values()))
        obj["frames"][0] = f"../../../outside/{video}/{obj['frames'][0]}"
    meta.write_text(json.dumps(data))
    make = {"train": lambda: YouTubeVOSTrainDataset(youtube_vos_root, split="train"),
            "valid": lambda: YouTubeVOSEvalDataset(youtube_vos_root, split="valid")}[split]
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        make()
    _assert_refused(err, meta)
    assert touched == []


def test_youtube_vos_scoring_and_prediction_stay_in_their_folders(youtube_vos_root, tmp_path, outside):
    # A video whose id leaves the folders (a YouTubeVOSVideo built by a caller of the Python API).
    from vidseg.data.youtube_vos_layout import evaluate_folder
    from vidseg.tasks.vos_entry import predict_youtube_vos

    name = list_videos(youtube_vos_root, "valid")[0]
    video = load_video(youtube_vos_root, "valid", name)
    gt_dir = youtube_vos_root / "valid_full_annotations"
    shutil.copytree(gt_dir / name, outside / name)
    escaping = dataclasses.replace(video, name=f"../../outside/{name}")
    with reads_under(outside) as touched, pytest.raises(DataError) as err:
        evaluate_folder([escaping], gt_dir, gt_dir)
    _assert_refused(err, escaping.name)
    before = files_under(outside)
    with pytest.raises(DataError):
        predict_youtube_vos(None, [escaping], tmp_path / "submission" / "Annotations", fingerprint="f")
    assert touched == [] and files_under(outside) == before
