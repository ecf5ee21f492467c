"""The prepared GPU run (issues 10 and 16): every CUDA path checked against float64, the ops benchmark with
measured ceilings and floors, a kernel-settings sweep, FEELVOS and VPSNet end to end; a short table and the
pass/fail of each section's target printed last.

    bash bench/gpu_check.sh RESULTS_DIR            # on the GPU machine: about 340 s on an H200 (--budget)
    bash bench/gpu_check.sh RESULTS_DIR --smoke    # the same script on CPU, TRITON_INTERPRET=1, tiny sizes

Sections, in this order (gpu-run-2026-12-04/diagnosis.md section 5; each a subprocess with a time cap in
seconds; a failure or a timeout is recorded and the next section runs; later sections keep a minimum share
of the budget; every benchmark writes its results after each row, so a section stopped at its cap keeps
what it measured):
- ``env`` (5): versions (the GPU machine has torch 2.11 / Triton 3.6, not the pins), GPU, SM count, clocks.
- ``tests`` (70): ``pytest -m cuda tests/ops``: first the arg-min check's self-test (the exact answer
  passes, an index shifted by one and uncentred single-TF32 ranking fail), then every kernel and the
  public ops at the benchmark sizes against float64 (inputs with one near-duplicate per 2x2 block,
  coverage of clear-cut minima computed before each kernel runs, every case run and recorded; absent
  objects, ignored labels, borders, dilation; fp32/bf16/fp16; raw outputs poisoned before each launch),
  plus the interpreter's block-edge cases compiled. Target: no failed and no inconclusive case, coverage
  >= 60%, excess <= 0.2 x tolerance, no fallback. Smoke: the interpreter checks.
- ``ops`` (40): ``bench.ops --device cuda --no-baselines``: local matching (tc and direct), global matching,
  fp32/bf16, N = 1/3/10, correlation, flow_warp; CUDA events, medians of rotated inputs, measured ceilings
  and floor fractions, first-call (JIT) times, forward+backward, kernel resources. Target: tc N=3 <= 1.7 ms.
- ``sweep`` (70): ``bench.ops --only-sweep``: local_tc, global, correlation settings, fp32/bf16; a setting
  the device cannot run is recorded as skipped with what it needed. Target: it finishes.
- ``feelvos`` (55): ``bench.feelvos_fps``: 480x854, 3 objects, output stride 8, ResNet-101, fp32 and
  bf16-mixed, vidseg ops and naive ops. Target: bf16 <= 15 ms/frame.
- ``compile`` (60): the same, ResNet-101 bf16-mixed, torch.compile (inductor), vidseg ops, one row.
  Target: <= 12 ms/frame.
- ``vpsnet`` (40): ``bench.vpsnet_fps``: fusetrack at 1024x2048, 8 frames, per-module breakdown. Target:
  flow <= 15 ms.
- ``train`` (not run unless named with ``--only``): FEELVOS training steps through ``vidseg.train.train``.
``--extra SECTION='ARGS'`` appends arguments to a section's command (e.g. a benchmark's new variants).
If the tensor-core local-matching kernel *fails* its checks (a hard failure, not an inconclusive case) and
the direct one passes, later sections run with ``VIDSEG_TRITON_LOCAL=direct`` (recorded).

Writes to RESULTS_DIR (at most 8 files come back from the lent machine): gpu_check.json (every section's
full results and the targets' verdicts), gpu_check.md (every table), gpu_check.log (all output),
kernels-ptx.txt (PTX of the default kernels; GPU only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/ops.py

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 300


@dataclass
class Section:
    name: str
    cap_s: float  # at most this long (GPU); later sections keep MIN_SHARE_S each
    command: list[str]
    env: dict = field(default_factory=dict)
    results: tuple[str, ...] = ()  # files under the work folder holding its results (json, md)


MIN_SHARE_S = 15.0
DEFAULT_BUDGET_S = 340.0
DEFAULT_SECTIONS = ("tests", "ops", "sweep", "feelvos", "compile", "vpsnet")


def sections(work: Path, smoke: bool, extra: dict[str, list[str]] | None = None) -> list[Section]:
    """Every section in running order (``train`` last: run only when named)."""
    py = sys.executable
    extra = extra or {}
    interp = {"TRITON_INTERPRET": "1"} if smoke else {}
    if smoke:
        tests = [py, "-m", "tests.ops.triton_checks", "--device", "cpu", "--size", "ci", "--json",
                 str(work / "checks.json")]
        ops = [py, "-m", "bench.ops", "--smoke", "--impl", "triton", "--device", "cpu", "--out", str(work),
               "--no-baselines", "--ptx", str(work / "kernels-ptx.txt")]
        feel = ["--device", "cpu", "--quick", "--frames", "4", "--backbones", "mobilenet_v3_large"]  # 4: pipelined
        vps = [py, "-m", "bench.vpsnet_fps", "--quick", "--frames", "2", "--device", "cpu", "--out", str(work)]
        compile_backend = ["--compile-backend", "aot_eager"]
        steps = 4
    else:
        tests = [py, "-m", "pytest", "-q", "-m", "cuda", "tests/ops", "tests/models/test_feelvos_fast_path.py",
                 "-p", "no:cacheprovider", "-rf",
                 f"--junitxml={work / 'junit.xml'}"]
        ops = [py, "-m", "bench.ops", "--device", "cuda", "--out", str(work), "--no-baselines",
               "--ptx", str(work / "kernels-ptx.txt")]
        feel = ["--device", "cuda", "--frames", "12", "--backbones", "resnet101"]
        vps = [py, "-m", "bench.vpsnet_fps", "--device", "cuda", "--frames", "8",
               "--flow-variants", "base,fast,fast-tf32", "--out", str(work)]
        compile_backend = []
        steps = TRAIN_STEPS
    ops_stem = "ops-cpu-smoke" if smoke else "ops-gpu"
    sweep = [*ops[:ops.index("--ptx")], "--only-sweep"]
    vps_stem = "vpsnet-fps-cpu-quick" if smoke else "vpsnet-fps-cuda"
    feelvos = [py, "-m", "bench.feelvos_fps", *feel, "--out", str(work)]
    all_sections = [
        Section("tests", 80, tests, {**interp, "VIDSEG_TRITON_CHECKS_JSON": str(work / "checks.json")},
                ("checks.json",)),
        Section("ops", 40, ops, interp, (f"{ops_stem}.json", f"{ops_stem}.md")),
        Section("sweep", 60, sweep, interp, (f"{ops_stem}-sweep.json", f"{ops_stem}-sweep.md")),
        Section("feelvos", 55, [*feelvos, "--precision", "32,bf16-mixed", "--paths", "base,fast",
                                "--name", "feelvos-fps"], {},
                ("feelvos-fps.json", "feelvos-fps.md")),
        Section("compile", 60, [*feelvos, "--precision", "bf16-mixed", "--paths", "fast", "--compile", "on",
                                *compile_backend, "--methods", "vidseg", "--name", "feelvos-fps-compile"], {},
                ("feelvos-fps-compile.json", "feelvos-fps-compile.md")),
        Section("vpsnet", 40, vps, {}, (f"{vps_stem}.json", f"{vps_stem}.md")),
        Section("train", 60, [py, "-m", "bench.gpu_check", "--train", str(work / "train"), "--steps", str(steps),
                              *(["--smoke"] if smoke else [])], {}, ("train/train.json",)),
    ]
    for section in all_sections:
        section.command = [*section.command, *extra.get(section.name, [])]
    return all_sections


# ---------------------------------------------------------------------------------------------------
# environment


def environment(smoke: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "smoke": smoke, "host_cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for module in ("triton", "torchvision", "pytorch_lightning", "torchmetrics", "timm", "hydra", "omegaconf",
                   "albumentations", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except Exception as error:  # missing, or broken by a version clash: both worth knowing
            info[module] = f"unavailable ({type(error).__name__}: {error})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(), sm_count=props.multi_processor_count,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability())),
                    l2_cache_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1))
        try:
            query = "name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu"
            smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True,
                                 text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as error:
            info["nvidia_smi"] = f"unavailable: {error}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        info["commit"] = head.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    return info


# ---------------------------------------------------------------------------------------------------
# training section (run in its own process: python -m bench.gpu_check --train DIR)


def _step_timer_class():
    import pytorch_lightning as pl
    import torch

    class StepTimer(pl.Callback):
        """Steps per second between step ``warmup`` and the last step (CUDA synchronised at both ends), the
        loss every 25 steps and the peak CUDA memory; written to ``path`` when training ends."""

        def __init__(self, path: str, warmup: int = 20) -> None:
            self.path, self.warmup = path, warmup
            self.start = self.start_step = None
            self.losses: dict[int, float] = {}

        def _sync(self):
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if self.start is None and step >= min(self.warmup, max(1, trainer.max_steps // 2)):
                self._sync()
                self.start, self.start_step = time.perf_counter(), step
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if step % 25 == 0 or step == trainer.max_steps:
                self.losses[step] = float(loss)

        def on_train_end(self, trainer, pl_module):
            self._sync()
            end_step = trainer.global_step
            seconds = time.perf_counter() - self.start if self.start is not None else None
            timed = end_step - self.start_step if self.start_step is not None else 0
            result = {"steps": end_step, "timed_steps": timed, "timed_seconds": seconds,
                      "steps_per_s": timed / seconds if seconds else None, "loss": self.losses,
                      "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                      else None}
            Path(self.path).write_text(json.dumps(result, indent=1))

    return StepTimer


def __getattr__(name: str):
    # Hydra instantiates ``bench.gpu_check.StepTimer``; built lazily so that importing this module for the
    # orchestration needs no pytorch_lightning
    if name == "StepTimer":
        return _step_timer_class()
    raise AttributeError(name)


def run_training(out: Path, steps: int, smoke: bool) -> dict:
    """Train FEELVOS (experiment=toy_vos, bf16-mixed) for ``steps`` steps through ``vidseg.train.train`` on a
    toy DAVIS generated here, with one validation at the end; returns the timing and validation metrics."""
    import torch
    from tests.helpers.configs import compose_config

    from vidseg.data.toy import generate_toy_davis
    from vidseg.train import train

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sizes = dict(num_train=4, num_val=1, frames=8) if smoke else dict(num_train=16, num_val=2)
    root = generate_toy_davis(out / "toy_davis", **sizes)
    generated = time.perf_counter() - start
    cuda = torch.cuda.is_available() and not smoke
    steps_per_epoch = steps if smoke else 100
    timer_path = out / "step_timer.json"
    overrides = [
        "task=vos", "experiment=toy_vos", f"data.root={root}", "trainer=gpu" if cuda else "trainer=cpu",
        "trainer.precision=bf16-mixed", f"trainer.max_steps={steps}", "trainer.max_time=null",
        f"data.samples_per_epoch={steps_per_epoch * 4}", "data.batch_size=4",
        f"trainer.check_val_every_n_epoch={max(1, steps // steps_per_epoch)}",  # one validation, at the end
        "data.val_max_sequences=1" if smoke else "data.val_max_sequences=2",
        f"data.num_workers={0 if smoke else 6}", "trainer.log_every_n_steps=25",
        "callbacks.progress_bar.refresh_rate=50",
        "+callbacks.step_timer._target_=bench.gpu_check.StepTimer", f"+callbacks.step_timer.path={timer_path}",
    ]
    if smoke:
        overrides += ["data.val_max_frames=4", "data.crop_size=[64,112]"]
    cfg = compose_config("train", out / "run", overrides)
    fit_start = time.perf_counter()
    result = train(cfg)
    timing = json.loads(timer_path.read_text())
    summary = {"precision": "bf16-mixed", "device": "cuda" if cuda else "cpu", "toy_generation_s": generated,
               "fit_s": time.perf_counter() - fit_start, **timing,
               "metrics": result["metrics"], "overrides": overrides}
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


# ---------------------------------------------------------------------------------------------------
# orchestration


def _run_section(section: Section, timeout: float, log, extra_env: dict) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **section.env, **extra_env}
    log.write(f"\n===== {section.name}: {' '.join(section.command)} (timeout {timeout:.0f} s, env "
              f"{ {k: v for k, v in {**section.env, **extra_env}.items()} })\n")
    log.flush()
    start = time.perf_counter()
    try:
        proc = subprocess.run(section.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timeout ({timeout:.0f} s)"
    seconds = time.perf_counter() - start
    log.write(f"===== {section.name}: {status} in {seconds:.1f} s\n")
    log.flush()
    print(f"[gpu_check] {section.name:8s} {status} in {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": seconds, "command": section.command, "env": {**section.env, **extra_env}}


def _load(work: Path, name: str):
    path = work / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
    except (OSError, ValueError) as error:  # e.g. cut off mid-write at the time cap
        return {"unreadable": f"{type(error).__name__}: {error}"} if path.suffix == ".json" else None


def _junit(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _parse_extra(items: list[str]) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--extra takes SECTION='ARGS', got {item!r}")
        extra.setdefault(name, []).extend(shlex.split(text))
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny sizes")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all sections (GPU)")
    parser.add_argument("--only", nargs="*", help=f"run only these sections (default: {' '.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--extra", action="append", default=[], metavar="SECTION=ARGS",
                        help="more arguments for a section's command, e.g. --extra feelvos='--backbones resnet50'")
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)  # the training section's own process
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train:
        run_training(args.train, args.steps, args.smoke)
        return 0
    if args.out is None:
        parser.error("--out is required")

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: run with --smoke on CPU", flush=True)
        return 2
    start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report: dict = {"env": {}, "sections": {}, "budget_s": None if args.smoke else args.budget}
    try:
        report["env"] = environment(args.smoke)
        report["sections"]["env"] = {"status": "ok", "seconds": time.perf_counter() - start}
    except Exception as error:  # a broken version probe must not cost the run
        report["env"] = {"error": f"{type(error).__name__}: {error}", "torch": torch.__version__, "triton": "?",
                         "python": platform.python_version()}
        report["sections"]["env"] = {"status": f"failed ({type(error).__name__})",
                                     "seconds": time.perf_counter() - start}
    env = report["env"]
    print(f"[gpu_check] torch {env.get('torch')}, triton {env.get('triton')}, python {env.get('python')}, "
          f"{env.get('gpu', 'no GPU')} ({env.get('sm_count', '-')} SMs); work folder {work}", flush=True)
    budget = float("inf") if args.smoke else args.budget
    extra_env: dict = {}
    wanted = args.only or DEFAULT_SECTIONS
    todo = [s for s in sections(work, args.smoke, _parse_extra(args.extra)) if s.name in wanted]
    with open(out / "gpu_check.log", "w") as log:
        log.write(json.dumps(env, indent=1) + "\n")
        for index, section in enumerate(todo):
            left = budget - (time.perf_counter() - start) - MIN_SHARE_S * (len(todo) - index - 1)
            timeout = 1800.0 if args.smoke else min(section.cap_s, left)  # the interpreter is slow
            if timeout < MIN_SHARE_S:
                report["sections"][section.name] = {"status": "skipped (time budget)", "seconds": 0.0}
                print(f"[gpu_check] {section.name:8s} skipped (time budget)", flush=True)
                continue
            try:
                result = _run_section(section, timeout, log, extra_env)
                result["results"] = {name: _load(work, name) for name in section.results}
                if section.name == "tests":
                    _after_tests(result, work, extra_env)
            except Exception as error:  # the orchestration itself: record it, run the next section
                log.write(traceback.format_exc())
                result = {"status": f"failed (gpu_check: {type(error).__name__}: {error})", "seconds": 0.0}
                print(f"[gpu_check] {section.name:8s} {result['status']}", flush=True)
            report["sections"][section.name] = result
            _write_json(out, report, start)  # after every section: a run cut short keeps what it measured
    ptx = work / "kernels-ptx.txt"
    if ptx.is_file() and ptx.stat().st_size < 15 * 2**20:
        shutil.copy(ptx, out / "kernels-ptx.txt")
    report["targets"] = targets(report, args.smoke)
    _write_json(out, report, start)
    tables = summary_tables(report)
    (out / "gpu_check.md").write_text(full_markdown(report, tables))
    print("\n" + tables)
    shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, s in report["sections"].items() if s["status"] != "ok"]
    return 1 if failed else 0


def _write_json(out: Path, report: dict, start: float) -> None:
    report["total_s"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))


def _after_tests(result: dict, work: Path, extra_env: dict) -> None:
    """Read the checks' verdicts; fall back to the direct local kernel only on a hard failure of the tc
    kernel (a wrong answer), never on an inconclusive case (inputs that tested too little)."""
    result["junit"] = _junit(work / "junit.xml")
    checks = result["results"].get("checks.json") or {}
    failed = set(checks.get("failures", []))
    if "local_matching_tc_argmin" in failed and "local_matching_direct_argmin" not in failed:
        extra_env["VIDSEG_TRITON_LOCAL"] = "direct"
        result["fallback"] = "later sections ran with VIDSEG_TRITON_LOCAL=direct (the tc kernel failed its checks)"
    elif "local_matching_tc_argmin" in set(checks.get("inconclusive", [])):
        result["fallback"] = "none: the tc kernel's checks were inconclusive (too few clear-cut minima), not failed"


# ---------------------------------------------------------------------------------------------------
# reports


def _ms(seconds) -> str:
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def _fmt(value, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec``, or empty when None."""
    return "" if value is None else f"{value:{spec}}{suffix}"


def _json_result(report: dict, section: str) -> dict | None:
    """The first JSON result of a section (None when it wrote none, or an unreadable one)."""
    results = (report["sections"].get(section) or {}).get("results") or {}
    readable = (v for k, v in results.items() if k.endswith(".json") and isinstance(v, dict) and "unreadable" not in v)
    return next(readable, None)


def _timed(row: dict) -> bool:
    time_s = row.get("time_s")
    return not row.get("skipped") and isinstance(time_s, (int, float)) and math.isfinite(time_s)


def targets(report: dict, smoke: bool) -> list[dict]:
    """Each section's target (diagnosis.md section 5) with the measured value and a verdict: "pass",
    "FAIL", "not measured" (the section did not produce the number), or "smoke" (CPU smoke run: shown, not
    judged)."""
    out: list[dict] = []

    def add(section, target, value, ok):
        verdict = "not measured" if value is None else "smoke" if smoke else ("pass" if ok else "FAIL")
        out.append({"section": section, "target": target, "value": value, "verdict": verdict})

    checks = _json_result(report, "tests") or {}
    rows = checks.get("rows") or []
    argmin = [r for r in rows if "coverage" in r and r.get("check") != "self_test"]
    tests_ran = bool(rows)
    add("tests", "no failed check", len(checks.get("failures", [])) if tests_ran else None,
        not checks.get("failures"))
    add("tests", "no inconclusive check", len(checks.get("inconclusive", [])) if tests_ran else None,
        not checks.get("inconclusive"))
    coverage = min((r["coverage"] for r in argmin), default=None)
    add("tests", "coverage of clear-cut minima >= 60% (every arg-min case)",
        None if coverage is None else round(coverage, 4), coverage is not None and coverage >= 0.6)
    excess = max((r["excess_over_tol"] for r in argmin if "excess_over_tol" in r), default=None)
    add("tests", "worst excess <= 0.2 x tolerance", None if excess is None else round(excess, 4),
        excess is not None and excess <= 0.2)
    fallback = (report["sections"].get("tests") or {}).get("fallback", "")
    add("tests", "no fallback to the direct local kernel", fallback or "none" if tests_ran else None,
        "VIDSEG_TRITON_LOCAL" not in fallback)
    ops = _json_result(report, "ops") or {}
    tc = [r for r in ops.get("rows", []) if r.get("op") == "local" and r.get("method") == "vidseg raw search (tc)"
          and r.get("case", "").endswith("N=3") and _timed(r)]
    worst = max((r["time_s"] for r in tc), default=None)
    add("ops", "local tc raw search, N=3 <= 1.7 ms (fp32 and bf16)", None if worst is None else round(worst * 1e3, 3),
        worst is not None and worst <= 1.7e-3)
    sweep = _json_result(report, "sweep")
    status = (report["sections"].get("sweep") or {}).get("status")
    add("sweep", "finishes", status, status == "ok")
    if sweep:
        skipped = sum(1 for r in sweep.get("rows", []) if r.get("skipped"))
        out.append({"section": "sweep", "target": "settings skipped (recorded, not fatal)", "value": skipped,
                    "verdict": "info"})
    fps = [*((_json_result(report, "feelvos") or {}).get("rows") or [])]
    bf16 = [r for r in fps if r.get("precision") == "bf16-mixed" and "resnet101" in str(r.get("backbone"))
            and r.get("vidseg_fps")]
    best = max((r["vidseg_fps"] for r in bf16), default=None)
    add("feelvos", "R101 bf16-mixed <= 15 ms/frame", None if best is None else round(1e3 / best, 2),
        best is not None and 1e3 / best <= 15)
    compiled = [r for r in (_json_result(report, "compile") or {}).get("rows") or []
                if r.get("precision") == "bf16-mixed" and r.get("vidseg_fps")]
    best = max((r["vidseg_fps"] for r in compiled), default=None)
    add("compile", "bf16-mixed compiled <= 12 ms/frame", None if best is None else round(1e3 / best, 2),
        best is not None and 1e3 / best <= 12)
    vps = _json_result(report, "vpsnet") or {}
    large = [r for r in vps.get("sizes", []) if tuple(r.get("size", ()))[:2] == (1024, 2048)]
    flow = (large[0].get("breakdown_ms") or {}).get("flow") if large else None
    add("vpsnet", "flow <= 15 ms at 1024x2048", None if flow is None else round(flow, 2),
        flow is not None and flow <= 15)
    return out


def summary_tables(report: dict) -> str:
    """The short table printed last: one line per section, each target's verdict, then the key numbers of
    each section. A part that cannot be read is reported, never fatal."""
    env, sections_ = report["env"], report["sections"]
    lines = [f"GPU check: {env.get('gpu', 'CPU smoke run')}, torch {env.get('torch')}, triton {env.get('triton')}, "
             f"{report.get('total_s', 0):.0f} s total" + (f" (budget {report['budget_s']:.0f} s)"
                                                          if report.get("budget_s") else ""),
             "", "| section | status | s |", "|---|---|---:|"]
    for name, s in sections_.items():
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', 0):.0f} |")
    for part in (_targets_table, _tests_table, _ops_table, _sweep_table, _ceilings_line, _fps_table, _train_line,
                 _vps_lines):
        try:
            lines += part(report)
        except Exception as error:  # one malformed result must not cost the others
            lines += ["", f"({part.__name__.strip('_')}: could not be read: {type(error).__name__}: {error})"]
    return "\n".join(lines) + "\n"


def _targets_table(report: dict) -> list[str]:
    rows = report.get("targets") or []
    if not rows:
        return []
    lines = ["", "| target | section | value | verdict |", "|---|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['section']} | {r['value'] if r['value'] is not None else '-'} | "
                     f"{r['verdict']} |")
    return lines


def _tests_table(report: dict) -> list[str]:
    tests = _json_result(report, "tests")
    if not tests:
        return []
    lines = ["", "| check | dtype | cases | ok / failed / inconclusive | min coverage | worst excess / tol | "
             "min agreement | max corr. error |", "|---|---|---:|---|---:|---:|---:|---:|"]
    groups: dict = {}
    for row in tests["rows"]:
        groups.setdefault((row["check"], row["dtype"]), []).append(row)
    for (check, dtype), rows in groups.items():
        counts = "/".join(str(sum(r.get("status", "ok") == s for r in rows)) for s in ("ok", "failed", "inconclusive"))
        coverage = min((r["coverage"] for r in rows if "coverage" in r), default=None)
        excess = max((r.get("max_excess_sq", 0) / r["tolerance_sq"] for r in rows if "tolerance_sq" in r),
                     default=None)
        agreement = min((r["agreement"] for r in rows if "agreement" in r), default=None)
        corr = max((r["max_abs_error"] for r in rows if "max_abs_error" in r), default=None)
        lines.append(f"| {check} | {dtype} | {len(rows)} | {counts} | {_fmt(coverage, '.3f')} | "
                     f"{_fmt(excess, '.3f')} | {_fmt(agreement, '.5f')} | {_fmt(corr, '.2e')} |")
    if tests.get("failures"):
        lines.append(f"FAILED checks: {', '.join(tests['failures'])}")
    if tests.get("inconclusive"):
        lines.append(f"INCONCLUSIVE checks (inputs tested too little; not kernel failures): "
                     f"{', '.join(tests['inconclusive'])}")
    for row in tests["rows"]:
        if row.get("status") in ("failed", "inconclusive"):
            message = row.get("message", "")[:300]
            lines.append(f"- {row['status']}: {row['check']} {row['case']} {row['dtype']}: {message}")
    return lines


def _ops_table(report: dict) -> list[str]:
    ops = _json_result(report, "ops")
    if not ops:
        return []
    lines = ["", "| op | case | dtype | op ms | raw search ms | direct ms | fwd+bwd ms | floor % (raw) | "
             "first call ms | best baseline x |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_case: dict = {}
    for row in ops["rows"]:
        if row["op"].startswith("sweep") or not _timed(row):
            continue
        by_case.setdefault((row["op"], row["case"], row["dtype"]), []).append(row)
    for (op, case, dtype), rows in by_case.items():
        main = next((r for r in rows if r["method"].startswith("vidseg (") and "forward+backward" not in r["method"]),
                    None)
        raw = next((r for r in rows if r["method"].startswith("vidseg raw search") and "direct" not in r["method"]),
                   None)
        direct = next((r for r in rows if r["method"] == "vidseg raw search (direct)"), None)
        fwd_bwd = next((r for r in rows if "forward+backward" in r["method"]), None)
        baselines = [r for r in rows if not r["method"].startswith("vidseg")]
        best = max((r["speedup"] for r in baselines), default=None)
        timed = raw or main
        floor = f"{100 * timed['floor_s'] / timed['time_s']:.1f}" if timed and timed["floor_s"] else ""
        lines.append(f"| {op} | {case} | {dtype} | {_ms(main and main['time_s'])} | {_ms(raw and raw['time_s'])} | "
                     f"{_ms(direct and direct['time_s'])} | {_ms(fwd_bwd and fwd_bwd['time_s'])} | {floor} | "
                     f"{(main or {}).get('first_call_s', 0) * 1e3:.0f} | {_fmt(best, '.1f')} |")
    return lines


def _sweep_table(report: dict) -> list[str]:
    sweep = _json_result(report, "sweep")
    if not sweep:
        return []
    lines = ["", "| sweep (raw search, N=3) | dtype | defaults ms | best setting | best ms | floor % (best) | "
             "skipped |", "|---|---|---:|---|---:|---:|---:|"]
    groups: dict = {}
    for row in sweep["rows"]:
        groups.setdefault((row["op"].removeprefix("sweep "), row["dtype"]), []).append(row)
    notes = []
    for (kernel, dtype), rows in groups.items():
        exact = [r for r in rows if "single TF32" not in r["method"] and _timed(r)]
        skipped = [r for r in rows if not _timed(r)]
        notes += [f"- skipped {kernel} {dtype} {r['method']}: {r.get('note', '')}" for r in skipped]
        default = next((r for r in exact if r["method"] == "defaults"), None)
        best = min(exact, key=lambda r: r["time_s"]) if exact else None
        floor = f"{100 * best['floor_s'] / best['time_s']:.1f}" if best and best["floor_s"] else ""
        lines.append(f"| {kernel} | {dtype} | {_ms(default and default['time_s'])} | "
                     f"{best['method'] if best else '-'} | {_ms(best and best['time_s'])} | {floor} | {len(skipped)} |")
        for r in rows:
            if "single TF32" in r["method"] and _timed(r):
                lines.append(f"| {kernel} | {dtype} | single TF32: {_ms(r['time_s'])} | {r['note']} | | | |")
    return lines + notes


def _ceilings_line(report: dict) -> list[str]:
    c = ((_json_result(report, "ops") or _json_result(report, "sweep") or {}).get("machine") or {}).get("ceilings")
    if not c:
        return []
    return [f"\nCeilings: copy {c['copy_bytes_per_s'] / 1e12:.3g} TB/s, bf16 {c['bf16_flop_per_s'] / 1e12:.3g} "
            f"TFLOP/s, TF32 {c['tf32_flop_per_s'] / 1e12:.3g} TFLOP/s; the {c.get('pair_matrix_n')} x 128 x "
            f"{c.get('pair_matrix_n')} pair matrix alone (one matmul): {_ms(c.get('bf16_pair_matrix_s'))} ms bf16, "
            f"{_ms(c.get('tf32_pair_matrix_s'))} ms TF32"]


def _fps_table(report: dict) -> list[str]:
    fps_rows = []
    for name in ("feelvos", "compile"):
        data = _json_result(report, name)
        fps_rows += data["rows"] if data else []
    if not fps_rows:
        return []
    lines = ["", "| FEELVOS | precision | compile | vidseg fps | ms/frame | naive fps | speed-up |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in fps_rows:
        naive = 1 / r["naive_s_per_frame"] if r.get("naive_s_per_frame") else None
        ms = 1e3 / r["vidseg_fps"] if r.get("vidseg_fps") else None
        lines.append(f"| {r['backbone']} {r['size']} | {r['precision']} | {r['compile'] or 'no'} | "
                     f"{_fmt(r['vidseg_fps'], '.2f')} | {_fmt(ms, '.1f')} | {_fmt(naive, '.2f')} | "
                     f"{_fmt(r.get('speedup'), '.1f', 'x')} |")
    return lines


def _train_line(report: dict) -> list[str]:
    train = ((report["sections"].get("train") or {}).get("results") or {}).get("train/train.json")
    if not train:
        return []
    jf = train["metrics"].get("val/J&F")
    return [f"\nTraining: {train['steps']} steps {train['precision']} on {train['device']}, "
            f"{train['steps_per_s'] or 0:.2f} steps/s over the last {train['timed_steps']}, peak "
            f"{train['peak_cuda_mib'] or 0:.0f} MiB, val J&F {_fmt(jf, '.3f')}"]


def _vps_lines(report: dict) -> list[str]:
    vps = _json_result(report, "vpsnet")
    if not vps:
        return []
    lines = []
    for r in vps["sizes"]:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown_ms"].items())
        flow = f", flow {r['flow']}" if r.get("flow") else ""
        lines.append(f"VPSNet fusetrack {r['size'][0]}x{r['size'][1]}{flow}: {r['fps']:.2f} fps "
                     f"({r['ms_per_frame']:.0f} ms: {parts})")
    return lines


def full_markdown(report: dict, tables: str) -> str:
    parts = ["# vidseg GPU check", "", tables, "", "## Environment", "", "```",
             json.dumps(report["env"], indent=1), "```"]
    for name, section in report["sections"].items():
        parts += ["", f"## {name}: {section['status']} ({section['seconds']:.0f} s)", ""]
        if section.get("command"):
            parts += [f"`{' '.join(section['command'])}`", ""]
        for value in (section.get("results") or {}).values():
            if isinstance(value, str):
                parts.append(value)
        if section.get("fallback"):
            parts.append(section["fallback"])
        if section.get("junit"):
            parts.append(f"pytest: {section['junit']}")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
