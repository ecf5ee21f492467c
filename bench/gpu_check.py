"""The prepared GPU run (issue 10): every CUDA path checked against float64, the ops benchmark with measured
ceilings and floors, FEELVOS and VPSNet end to end, FEELVOS training steps; a short table printed last.

    bash bench/gpu_check.sh RESULTS_DIR            # on the GPU machine: <= 7 minutes on an H200
    bash bench/gpu_check.sh RESULTS_DIR --smoke    # the same script on CPU, TRITON_INTERPRET=1, tiny sizes

Sections, in this order (each a subprocess with a time cap; a failure or timeout is recorded and the next
section runs; later sections keep a minimum share of the budget):
- ``env``: versions (the GPU machine has torch 2.11 / Triton 3.6, not the pins), GPU, SM count, clocks.
- ``tests``: ``pytest -m cuda tests/ops``: every kernel and the public ops at the benchmark sizes against
  float64 (fresh random inputs with FEELVOS-like norms and near-duplicates, absent objects, ignored labels,
  borders, dilation; fp32/bf16/fp16; raw outputs poisoned before each launch), plus the interpreter's
  block-edge cases compiled. Smoke: the interpreter checks.
- ``ops``: ``bench.ops --device cuda``: matching, correlation and flow_warp against the naive baselines on
  the same GPU, CUDA events, medians of rotated inputs, peak memory, measured ceilings and floor fractions,
  first-call (JIT) times, forward+backward, kernel resources.
- ``feelvos``: ``bench.feelvos_fps``: 480x854, 3 objects, output stride 8, ResNet-101 and MobileNetV3,
  fp32 and bf16-mixed, vidseg ops and naive ops.
- ``train``: FEELVOS training through ``vidseg.train.train`` on a generated toy DAVIS, bf16-mixed,
  300 steps with one validation at the end: steps per second after warm-up.
- ``vpsnet``: ``bench.vpsnet_fps``: fusetrack at 1024x2048 (and 256x512) with the per-module breakdown.
- ``compile``: ``bench.feelvos_fps --compile on`` (bf16-mixed, then fp32), vidseg ops.
- ``sweep``: ``bench.ops --only-sweep``: a few Triton kernel settings (and single TF32) at N = 3.
Every benchmark writes its results after each row, so a section stopped at its time cap keeps what it measured.
If the tensor-core local-matching kernel fails its checks and the direct one passes, later sections run
with ``VIDSEG_TRITON_LOCAL=direct`` (recorded).

Writes to RESULTS_DIR (at most 8 files come back from the lent machine): gpu_check.json (every section's
full results), gpu_check.md (every table), gpu_check.log (all output), kernels-ptx.txt (PTX of the default
kernels; GPU only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
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


def sections(work: Path, smoke: bool) -> list[Section]:
    py = sys.executable
    interp = {"TRITON_INTERPRET": "1"} if smoke else {}
    if smoke:
        tests = [py, "-m", "tests.ops.triton_checks", "--device", "cpu", "--size", "ci", "--json",
                 str(work / "checks.json")]
        ops = [py, "-m", "bench.ops", "--smoke", "--impl", "triton", "--device", "cpu", "--out", str(work),
               "--ptx", str(work / "kernels-ptx.txt")]
        feel = ["--device", "cpu", "--quick", "--frames", "3", "--backbones", "mobilenet_v3_large"]
        vps = [py, "-m", "bench.vpsnet_fps", "--quick", "--frames", "2", "--device", "cpu", "--out", str(work)]
        compile_backend = ["--compile-backend", "aot_eager"]
        steps = 4
    else:
        tests = [py, "-m", "pytest", "-q", "-m", "cuda", "tests/ops", "-p", "no:cacheprovider", "-rf",
                 f"--junitxml={work / 'junit.xml'}"]
        ops = [py, "-m", "bench.ops", "--device", "cuda", "--out", str(work), "--ptx", str(work / "kernels-ptx.txt")]
        feel = ["--device", "cuda", "--frames", "12"]
        vps = [py, "-m", "bench.vpsnet_fps", "--device", "cuda", "--frames", "10", "--memory-frames", "30,100",
               "--out", str(work)]
        compile_backend = []
        steps = TRAIN_STEPS
    ops_stem = "ops-cpu-smoke" if smoke else "ops-gpu"
    sweep = [*ops[:ops.index("--ptx")], "--only-sweep"]
    vps_stem = "vpsnet-fps-cpu-quick" if smoke else "vpsnet-fps-cuda"
    feelvos = [py, "-m", "bench.feelvos_fps", *feel, "--out", str(work)]
    return [
        Section("tests", 100, tests, {**interp, "VIDSEG_TRITON_CHECKS_JSON": str(work / "checks.json")},
                ("checks.json",)),
        Section("ops", 75, ops, interp, (f"{ops_stem}.json", f"{ops_stem}.md")),
        Section("feelvos", 60, [*feelvos, "--precision", "32,bf16-mixed", "--name", "feelvos-fps"], {},
                ("feelvos-fps.json", "feelvos-fps.md")),
        Section("train", 60, [py, "-m", "bench.gpu_check", "--train", str(work / "train"), "--steps", str(steps),
                              *(["--smoke"] if smoke else [])], {}, ("train/train.json",)),
        Section("vpsnet", 45, vps, {}, (f"{vps_stem}.json", f"{vps_stem}.md")),
        Section("compile", 90, [*feelvos, "--precision", "bf16-mixed,32", "--compile", "on", *compile_backend,
                                "--methods", "vidseg", "--name", "feelvos-fps-compile"], {},
                ("feelvos-fps-compile.json", "feelvos-fps-compile.md")),
        Section("sweep", 60, sweep, interp, (f"{ops_stem}-sweep.json", f"{ops_stem}-sweep.md")),
    ]


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
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


def _junit(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny sizes")
    parser.add_argument("--budget", type=float, default=390.0, help="seconds for all sections (GPU)")
    parser.add_argument("--only", nargs="*", help="run only these sections")
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
    report = {"env": environment(args.smoke), "sections": {}}
    env = report["env"]
    print(f"[gpu_check] torch {env['torch']}, triton {env['triton']}, python {env['python']}, "
          f"{env.get('gpu', 'no GPU')} ({env.get('sm_count', '-')} SMs); work folder {work}", flush=True)
    budget = float("inf") if args.smoke else args.budget
    extra_env: dict = {}
    todo = [s for s in sections(work, args.smoke) if not args.only or s.name in args.only]
    with open(out / "gpu_check.log", "w") as log:
        log.write(json.dumps(env, indent=1) + "\n")
        for index, section in enumerate(todo):
            left = budget - (time.perf_counter() - start) - MIN_SHARE_S * (len(todo) - index - 1)
            timeout = section.cap_s if args.smoke else min(section.cap_s, left)
            if args.smoke:
                timeout = 1800.0  # the interpreter is slow; the caps are for the GPU
            if timeout < MIN_SHARE_S:
                report["sections"][section.name] = {"status": "skipped (time budget)", "seconds": 0.0}
                print(f"[gpu_check] {section.name:8s} skipped (time budget)", flush=True)
                continue
            result = _run_section(section, timeout, log, extra_env)
            result["results"] = {name: _load(work, name) for name in section.results}
            if section.name == "tests":
                result["junit"] = _junit(work / "junit.xml")
                checks = result["results"].get("checks.json") or {}
                failed = set(checks.get("failures", []))
                if "local_matching_tc_argmin" in failed and "local_matching_direct_argmin" not in failed:
                    extra_env["VIDSEG_TRITON_LOCAL"] = "direct"
                    result["fallback"] = "later sections ran with VIDSEG_TRITON_LOCAL=direct"
            report["sections"][section.name] = result
    ptx = work / "kernels-ptx.txt"
    if ptx.is_file() and ptx.stat().st_size < 15 * 2**20:
        shutil.copy(ptx, out / "kernels-ptx.txt")
    report["total_s"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    tables = summary_tables(report)
    (out / "gpu_check.md").write_text(full_markdown(report, tables))
    print("\n" + tables)
    shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, s in report["sections"].items() if s["status"] != "ok"]
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------
# reports


def _ms(seconds) -> str:
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def _fmt(value, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec``, or empty when None."""
    return "" if value is None else f"{value:{spec}}{suffix}"


def summary_tables(report: dict) -> str:
    """The short table printed last: one line per section, then the key numbers of each."""
    env, sections_ = report["env"], report["sections"]
    lines = [f"GPU check: {env.get('gpu', 'CPU smoke run')}, torch {env['torch']}, triton {env['triton']}, "
             f"{report['total_s']:.0f} s total", "", "| section | status | s |", "|---|---|---:|"]
    for name, s in sections_.items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.0f} |")
    tests = sections_.get("tests", {}).get("results", {}).get("checks.json")
    if tests:
        lines += ["", "| check | dtype | cases | worst excess sq / tolerance | min agreement | max corr. error |",
                  "|---|---|---:|---:|---:|---:|"]
        groups: dict = {}
        for row in tests["rows"]:
            groups.setdefault((row["check"], row["dtype"]), []).append(row)
        for (check, dtype), rows in groups.items():
            excess = max((r.get("max_excess_sq", 0) / r["tolerance_sq"] for r in rows if "tolerance_sq" in r),
                         default=None)
            agreement = min((r["agreement"] for r in rows if "agreement" in r), default=None)
            corr = max((r["max_abs_error"] for r in rows if "max_abs_error" in r), default=None)
            lines.append(f"| {check} | {dtype} | {len(rows)} | {_fmt(excess, '.3f')} | {_fmt(agreement, '.5f')} | "
                         f"{_fmt(corr, '.2e')} |")
        if tests.get("failures"):
            lines.append(f"FAILED checks: {', '.join(tests['failures'])}")
    ops = next((v for k, v in sections_.get("ops", {}).get("results", {}).items() if k.endswith(".json") and v), None)
    if ops:
        lines += ["", "| op | case | dtype | op ms | raw search ms | fwd+bwd ms | floor % (raw) | first call ms | "
                  "best baseline x |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        by_case: dict = {}
        for row in ops["rows"]:
            if row["op"].startswith("sweep"):
                continue
            by_case.setdefault((row["op"], row["case"], row["dtype"]), []).append(row)
        for (op, case, dtype), rows in by_case.items():
            main = next((r for r in rows if r["method"].startswith("vidseg (")
                         and "forward+backward" not in r["method"]), None)
            raw = next((r for r in rows if r["method"].startswith("vidseg raw search") and "direct" not in r["method"]),
                       None)
            fwd_bwd = next((r for r in rows if "forward+backward" in r["method"]), None)
            baselines = [r for r in rows if not r["method"].startswith("vidseg")]
            best = max((r["speedup"] for r in baselines), default=None)
            timed = raw or main
            floor = f"{100 * timed['floor_s'] / timed['time_s']:.1f}" if timed and timed["floor_s"] else ""
            lines.append(f"| {op} | {case} | {dtype} | {_ms(main and main['time_s'])} | "
                         f"{_ms(raw and raw['time_s'])} | {_ms(fwd_bwd and fwd_bwd['time_s'])} | {floor} | "
                         f"{(main or {}).get('first_call_s', 0) * 1e3:.0f} | {_fmt(best, '.1f')} |")
    sweep = next((v for k, v in sections_.get("sweep", {}).get("results", {}).items() if k.endswith(".json") and v),
                 None)
    if sweep:
        lines += ["", "| sweep (raw search, N=3) | dtype | defaults ms | best setting | best ms | floor % (best) |",
                  "|---|---|---:|---|---:|---:|"]
        groups = {}
        for row in sweep["rows"]:
            groups.setdefault((row["op"].removeprefix("sweep "), row["dtype"]), []).append(row)
        for (kernel, dtype), rows in groups.items():
            exact = [r for r in rows if "single TF32" not in r["method"]]
            default = next((r for r in exact if r["method"] == "defaults"), None)
            best = min(exact, key=lambda r: r["time_s"])
            floor = f"{100 * best['floor_s'] / best['time_s']:.1f}" if best["floor_s"] else ""
            lines.append(f"| {kernel} | {dtype} | {_ms(default and default['time_s'])} | {best['method']} | "
                         f"{_ms(best['time_s'])} | {floor} |")
            for r in rows:
                if "single TF32" in r["method"]:
                    lines.append(f"| {kernel} | {dtype} | single TF32: {_ms(r['time_s'])} | {r['note']} | | |")
    c = (ops or sweep or {"machine": {}})["machine"].get("ceilings")
    if c:
        lines.append(f"\nCeilings: copy {c['copy_bytes_per_s'] / 1e12:.3g} TB/s, bf16 "
                     f"{c['bf16_flop_per_s'] / 1e12:.3g} TFLOP/s, TF32 {c['tf32_flop_per_s'] / 1e12:.3g} TFLOP/s; "
                     f"the {c.get('pair_matrix_n')} x 128 x {c.get('pair_matrix_n')} pair matrix alone (one matmul): "
                     f"{_ms(c.get('bf16_pair_matrix_s'))} ms bf16, "
                     f"{_ms(c.get('tf32_pair_matrix_s'))} ms TF32")
    fps_rows = []
    for name in ("feelvos", "compile"):
        results = sections_.get(name, {}).get("results", {})
        data = next((v for k, v in results.items() if k.endswith(".json") and v), None)
        fps_rows += data["rows"] if data else []
    if fps_rows:
        lines += ["", "| FEELVOS | precision | compile | vidseg fps | naive fps | speed-up |",
                  "|---|---|---|---:|---:|---:|"]
        for r in fps_rows:
            naive = 1 / r["naive_s_per_frame"] if r.get("naive_s_per_frame") else None
            lines.append(f"| {r['backbone']} {r['size']} | {r['precision']} | {r['compile'] or 'no'} | "
                         f"{_fmt(r['vidseg_fps'], '.2f')} | {_fmt(naive, '.2f')} | "
                         f"{_fmt(r.get('speedup'), '.1f', 'x')} |")
    train = sections_.get("train", {}).get("results", {}).get("train/train.json")
    if train:
        jf = train["metrics"].get("val/J&F")
        lines.append(f"\nTraining: {train['steps']} steps {train['precision']} on {train['device']}, "
                     f"{train['steps_per_s'] or 0:.2f} steps/s over the last {train['timed_steps']}, peak "
                     f"{train['peak_cuda_mib'] or 0:.0f} MiB, val J&F {_fmt(jf, '.3f')}")
    vps = next((v for k, v in sections_.get("vpsnet", {}).get("results", {}).items() if k.endswith(".json") and v),
               None)
    if vps:
        for r in vps["sizes"]:
            parts = ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown_ms"].items())
            lines.append(f"VPSNet fusetrack {r['size'][0]}x{r['size'][1]}: {r['fps']:.2f} fps "
                         f"({r['ms_per_frame']:.0f} ms: {parts})")
    return "\n".join(lines) + "\n"


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
