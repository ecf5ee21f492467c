# vidseg: everything runs inside .venv, created from scratch by `make install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
TEST_WORKERS ?= 2

.PHONY: install demo demo-vos demo-vps app test test-slow test-gpu test-browser lint bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel setuptools
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	# pip byte-compiles what it installs, but not an editable package's sources: without this every command
	# compiles vidseg's modules again when PYTHONDONTWRITEBYTECODE is set (40 ms of scoring a results folder)
	$(PY) -m compileall -q src
	touch $(STAMP)

## Both CPU demos: VOS (toy DAVIS, FEELVOS, J&F, masks + overlay video), then VPS (toy Cityscapes-VPS, VPSNet
## image and fusetrack variants, VPQ/STQ table, panoptic PNG/JSON + overlay video).
demo: install
	$(PY) -m vidseg.demo --task all --out $(DEMO_DIR)

## Only the VOS demo.
demo-vos: install
	$(PY) -m vidseg.demo --task vos --out $(DEMO_DIR)

## Only the VPS demo.
demo-vps: install
	$(PY) -m vidseg.demo --task vps --out $(DEMO_DIR)

## The local web app (both tasks) on http://127.0.0.1:7860; APP_ARGS e.g. "ckpt_vos=<ckpt> port=7861".
## Without checkpoints it uses the demo's (make demo).
app: install
	$(PY) -c "import gradio, playwright" 2>/dev/null || $(PY) -m pip install -c constraints.txt -e ".[app]"
	$(PY) -m vidseg.app $(APP_ARGS)

## Fast CPU tests (offline, tiny fixtures).
test: install
	$(PY) -m pytest -q -m "not slow and not cuda and not browser" tests

## Slow checks (learning checks, larger sizes).
test-slow: install
	$(PY) -m pytest -q -m slow tests

## GPU checks (Triton kernels on CUDA); needs a CUDA GPU.
test-gpu: install
	$(PY) -m pytest -q -m cuda tests

## The web app in Chromium (Playwright drives the Debian package's /usr/bin/chromium; nothing is downloaded).
## The VOS test checks that a painted object is tracked: it needs the demo's trained FEELVOS (make demo-vos, about
## 20 minutes on 2 cores, run here when outputs/demo has no checkpoint).
test-browser: install
	$(PY) -c "import gradio, playwright" 2>/dev/null || $(PY) -m pip install -c constraints.txt -e ".[app]"
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	test -f outputs/demo/train/checkpoints/last.ckpt || $(MAKE) demo-vos DEMO_DIR=outputs/demo
	$(PY) -m pytest -q -m browser tests

lint: install
	$(PY) -m ruff check src tests bench

## Benchmarks: print tables and write bench/results/.
bench: install
	$(PY) -m bench.ops --out bench/results
	$(PY) -m bench.feelvos_fps --out bench/results
	$(PY) -m bench.vpq --out bench/results
	$(PY) -m bench.vpsnet_fps --out bench/results
	$(PY) -m bench.deform_conv --out bench/results
	$(PY) -m bench.jf_speed --out bench/results

## The prepared GPU run (bench/gpu_check.sh: checks, ops, sweep, FEELVOS, compile, VPSNet; about 340 s on an H200),
## results in GPU_CHECK_OUT (default outputs/gpu-check). On CPU: make gpu-check GPU_CHECK_ARGS=--smoke
gpu-check:
	bash bench/gpu_check.sh $(or $(GPU_CHECK_OUT),outputs/gpu-check) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) outputs build dist src/*.egg-info
