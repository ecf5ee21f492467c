#!/usr/bin/env bash
# The prepared GPU run (issues 10 and 16; bench/gpu_check.py says what it checks and writes).
#
#   bash bench/gpu_check.sh RESULTS_DIR            # on a CUDA machine: about 340 s on an H200 (--budget 340),
#                                                  # leaving time for one rerun in a 15-minute lease
#   bash bench/gpu_check.sh RESULTS_DIR --smoke    # everything on CPU under TRITON_INTERPRET=1, tiny sizes
#   bash bench/gpu_check.sh RESULTS_DIR --only tests sweep      # some sections (also: --budget S,
#                                                  # --extra SECTION='ARGS'; train runs only when named)
#   bash bench/gpu_check.sh --fetch-wheels         # here, online: the wheels the GPU machine lacks
#
# vidseg runs from src/ (no install): the lent GPU machine has torch, triton, torchvision, pytorch-lightning,
# torchmetrics and timm but not hydra-core, omegaconf, albumentations (the configs, the training data) and
# their pure-python or small dependencies. Their wheels live in build/gpu-wheels (ignored by git, ~8 MB):
# carry that folder with the run; they are installed into a temporary folder, never into the system.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=build/gpu-wheels

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # versions as in constraints-resolved .venv; antlr4 4.9.3 (omegaconf's pin) exists only as an sdist: built here
    platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    mkdir -p "$WHEELS"
    python3 -m pip download --no-deps "${platform[@]}" -d "$WHEELS" hydra-core==1.3.8 omegaconf==2.3.1 \
        albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 typing_extensions==4.16.0 stringzilla==5.3.2 simsimd==6.5.16 || exit 1
    python3 -m pip wheel --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3 || exit 1
    du -sh "$WHEELS"
    exit 0
fi

out=${1:?usage: bench/gpu_check.sh RESULTS_DIR [--smoke] | --fetch-wheels}
shift
smoke=0
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && smoke=1; done

if (( smoke )); then
    PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
    # one thread: the development machines are shared (see bench/ops.py)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
else
    PY=${PYTHON:-python3}
    missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('hydra', 'omegaconf', 'albumentations') if u.find_spec(m) is None))")
    if [[ -n "$missing" ]]; then
        if compgen -G "$WHEELS/*.whl" > /dev/null; then
            site=$(mktemp -d /tmp/vidseg-site.XXXX)
            if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
                    "$WHEELS"/*.whl; then
                export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
                echo "gpu_check: installed $(ls "$WHEELS" | wc -l) wheels into $site for: $missing"
            else
                echo "gpu_check: installing the wheels of $WHEELS failed" >&2
            fi
        else
            # the tests, ops and sweep sections import none of them; the model and training sections will fail
            echo "gpu_check: $missing missing and no wheels in $WHEELS (bash bench/gpu_check.sh --fetch-wheels" \
                 "where pip works, and carry $WHEELS): the FEELVOS, VPSNet and training sections will fail" >&2
        fi
    fi
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m bench.gpu_check --out "$out" "$@"
