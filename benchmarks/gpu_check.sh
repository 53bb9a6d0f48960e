#!/usr/bin/env bash
# The GPU checks in one prepared command, for a GPU machine that has PyTorch (with CUDA) but
# not this project's other dependencies, and no network (the `device` tool's machines: Python
# 3.12, torch, numpy, pytest, tqdm, imageio, matplotlib, pandas, seaborn already there).
#
#   here, with network:  bash benchmarks/gpu_check.sh prepare        # wheels into .whl/ (ignored)
#   on the GPU machine:  bash benchmarks/gpu_check.sh run [OUT_DIR]  # probe, tests, tables
#   STAGES="probe tests v3" runs a subset (probe: benchmarks/gpu_probe.py on DreamerV3 XS);
#   SETS="train.cuda_graph=true" passes --set to the speed tables
#
# `run` installs the wheels and this checkout into a temporary folder (no build, no network),
# then writes to OUT_DIR (default $OUT, else gpu-out/): machine.txt (torch, GPU, driver),
# tests.txt (tests/test_cuda.py on the GPU), dreamerv3_gpu.md (DreamerV3 XS / S / small, fp32
# and bf16, vector and pixels) and recipes_gpu.md (DreamerV1 / V2 small and paper). The env is
# gym:Pendulum-v1 (3-dim vectors or 64 x 64 renders, 1 action): dm_control's wheel alone is
# larger than what may travel to that machine, and the learner step's cost does not depend on
# the env beyond the observation and action sizes. Run on an H200 on 2026-12-04:
# results/speed/gpu_h200.md.
# DEVICE=cpu runs the same here, to check the script itself (with PYVER=3.11 for `prepare` and
# V3_PRESETS=debug V12_PRESETS=debug UPDATES=3 to keep it short; the probe needs CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 pygame-ce==2.5.8 cma==4.5.0
        sacred==0.8.7 docopt-ng==0.9.0 jsonpickle==4.1.4 munch==4.0.0 GitPython==3.2.1
        gitdb==4.0.12 smmap==5.0.3 "setuptools==81.0.0")  # sacred 0.8.7 imports pkg_resources

case "${1:-}" in
prepare)
    rm -rf .whl && mkdir .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    du -sh .whl
    ;;
run)
    out=$(mkdir -p "${2:-${OUT:-gpu-out}}" && cd "${2:-${OUT:-gpu-out}}" && pwd)
    device=${DEVICE:-cuda}
    repo=$PWD
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
        .whl/*.whl
    # this checkout as installed (pyproject's package-dir mapping), without building it
    cp -r worldzoo "$site/worldzoo"
    for pkg in algorithms envs benchmarks; do cp -r "$pkg" "$site/worldzoo/$pkg"; done
    # GitPython (for Sacred) fails its import where no git binary is found, unless told not to
    export PYTHONPATH=$site PYTHONUNBUFFERED=1 MUJOCO_GL=egl GIT_PYTHON_REFRESH=quiet
    cd "$site"  # import worldzoo from there, not from the source tree
    {
        python3 -c "import platform, torch; print('python', platform.python_version(), \
'torch', torch.__version__, 'cuda', torch.version.cuda); print(torch.cuda.get_device_name() \
if torch.cuda.is_available() else 'no CUDA device')"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
            2>/dev/null || true
        nproc
    } | tee "$out/machine.txt"
    stages=${STAGES:-probe tests v3 v12}
    speed=(python3 "$repo/benchmarks/speed.py" --device "$device" --env gym:Pendulum-v1
           --updates "${UPDATES:-15}" --max-seconds 6 --peak-seconds 0.5 --act-steps 100)
    # SETS="train.cuda_graph=true": the tables with the update replayed as one CUDA graph
    for s in ${SETS:-}; do speed+=(--set "$s"); done
    for stage in $stages; do
        echo "== $stage ($(date -u +%T))"
        case $stage in
        probe)  # host syncs, GPU busy share, whole-update CUDA graph (DreamerV3 XS)
            timeout 120 python3 "$repo/benchmarks/gpu_probe.py" --device "$device" \
                --recipe dreamerv3 --preset "${PROBE_PRESET:-xs}" --env gym:Pendulum-v1 \
                2>&1 | tee "$out/probe.txt" || echo "gpu_probe.py failed: see probe.txt" ;;
        tests)
            WORLDZOO_TEST_DEVICE=$device timeout 150 python3 -m pytest \
                "$repo/tests/test_cuda.py" -q -p no:cacheprovider --rootdir "$repo" 2>&1 \
                | tee "$out/tests.txt" || echo "tests/test_cuda.py had failures: see tests.txt" ;;
        v3)  # shellcheck disable=SC2086 # the preset lists split into words
            timeout 200 "${speed[@]}" --recipes dreamerv3 --presets ${V3_PRESETS:-xs s small} \
                --obs vector pixels --precision float32 bfloat16 \
                --out "$out/dreamerv3_gpu.md" || echo "dreamerv3 table incomplete" ;;
        v12)  # shellcheck disable=SC2086
            timeout 150 "${speed[@]}" --recipes dreamerv1 dreamerv2 \
                --presets ${V12_PRESETS:-small paper} --obs vector pixels \
                --out "$out/recipes_gpu.md" || echo "dreamerv1/v2 table incomplete" ;;
        *) echo "unknown stage $stage (known: probe tests v3 v12)" >&2; exit 2 ;;
        esac
    done
    echo "== done ($(date -u +%T))"
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare | run [OUT_DIR]" >&2
    exit 2
    ;;
esac
