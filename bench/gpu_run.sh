#!/usr/bin/env bash
# The GPU checks in one go, for a CUDA machine with no network (torch, triton, numba, pytest-xdist
# and hypothesis preinstalled; no bitsandbytes), in a fixed wall-clock budget:
#
#   bash bench/gpu_run.sh [RESULTS_DIR]        (default bench/results/gpu)
#
# Stages, in priority order; a stage that would not finish inside what is left of the budget
# (GPU_RUN_BUDGET_S, default 570 s) is cut at the budget and the later ones are skipped, so a
# short lease still brings back the most important results:
#   kernel-tests.txt   tests/kernels on CUDA tensors (8 pytest-xdist workers where xdist is
#                      installed), float32 and bfloat16, the Triton paths compiled for this GPU
#                      (not interpreted); a failure is recorded and the benchmarks still run
#                      (their rows then describe kernels that failed a check)
#   results.json ...   python -m bench: kernels (small, train, large; Triton against PyTorch),
#                      scale (the M-sized log's SRGNN training on this GPU, fp32 and bf16),
#                      train (ml-100k epochs), serve
#   profile-train-M.txt  python -m bench.profile_train: torch.profiler's top ops of 200 batches
#                      of that M training on this GPU (where a batch's time goes)
#   pytest-bench.json  pytest bench --benchmark-only at the large shape
#   llm                random-weight SmolLM2-135M and 7B Qwen2-style generation, bf16 vs NF4
#   env.txt, tables.md the device, driver and package versions; the tables of everything above
# With GPU_RUN_ARCHIVE=FILE the results folder is also packed into FILE (tar.gz) after every
# stage, for a machine from which only a few files come back.
#
# Carry in .wheels/ the bitsandbytes wheel (pip download --no-deps --only-binary=:all:
# --platform manylinux_2_24_x86_64 --python-version 3.12 bitsandbytes==0.50.2 -d .wheels) and
# the recbole 1.2.1 wheel, whose MovieLens-100k files the train suite reads (installed with
# --no-deps: data only); without them the 4-bit runs and the train suite record why they did
# not run.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${1:-bench/results/gpu}"
BUDGET="${GPU_RUN_BUDGET_S:-570}"
ARCHIVE="${GPU_RUN_ARCHIVE:-}"
mkdir -p "$RESULTS"
: > "$RESULTS/stages.txt"
export PYTHONUNBUFFERED=1

pack() { [ -z "$ARCHIVE" ] || tar czf "$ARCHIVE" -C "$RESULTS" . ; }

# stage NAME CAP_S COMMAND...: runs COMMAND for at most CAP_S seconds or what is left of the
# budget (less a 20 s reserve for the tables), whichever is less; skips it under 15 s.
stage() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - SECONDS - 20))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 15 ]; then
        echo "== skipped $name: ${left}s of the budget left" | tee -a "$RESULTS/stages.txt"
        return
    fi
    echo "== $name (limit ${limit}s, ${SECONDS}s into the run): $*" >&2
    local begin=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local status=$?
    echo "== $name: exit $status after $((SECONDS - begin))s" | tee -a "$RESULTS/stages.txt"
    pack
}

for wheel in .wheels/bitsandbytes-*.whl .wheels/recbole-*.whl; do
    [ -f "$wheel" ] && python -m pip install --quiet --no-deps --no-index "$wheel"
done
python -m pip install --quiet --no-deps --no-build-isolation --no-index -e . >/dev/null || exit 1
python - > "$RESULTS/env.txt" <<'EOF' || exit 1
import platform, subprocess, torch, triton, numpy, llm4sbr
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
try:
    query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
    print("driver, memory:", subprocess.run(query, capture_output=True, text=True).stdout.strip())
except OSError as error:
    print("driver: nvidia-smi failed:", error)
print("torch:", torch.__version__, "cuda:", torch.version.cuda, "triton:", triton.__version__,
      "numpy:", numpy.__version__, "python:", platform.python_version(), "llm4sbr:", llm4sbr.__version__)
print("cpu cores:", __import__("os").cpu_count())
EOF
cat "$RESULTS/env.txt"

# TRITON_INTERPRET=0: tests/conftest.py defaults it to 1 (the CPU interpreter), and tests/kernels
# refuses LLM4SBR_TEST_DEVICE=cuda under the interpreter (usage error, exit 4), as it does without
# a GPU. The sm_90 compile tests are left out: they compile on the CPU, which the real launches do.
WORKERS=$(python -c "import xdist" 2>/dev/null && echo "-n 8")  # pytest-xdist, where installed
stage "kernel tests" 240 env LLM4SBR_TEST_DEVICE=cuda TRITON_INTERPRET=0 bash -o pipefail -c \
    "python -m pytest tests/kernels -q -rfE $WORKERS -p no:cacheprovider -k 'not compile_for_sm90' \
     --durations=10 2>&1 | tee '$RESULTS/kernel-tests.txt'"

stage "kernels" 100 python -m bench --suite kernels --shapes small train large --providers triton torch --rounds 20 --out "$RESULTS"
LOGS=$(mktemp -d)  # the M log, written by the scale stage and reused by the profile
stage "scale M on the GPU" 150 python -m bench --suite scale --scale-sizes M --scale-train-threads 4 \
    --scale-train-samples 150000 --scale-precisions fp32 bf16 --scale-dir "$LOGS" --out "$RESULTS"
stage "profile M training" 90 python -m bench.profile_train --size M --samples 20000 --device cuda \
    --threads 4 --log-dir "$LOGS" --out "$RESULTS/profile-train-M.txt"
stage "train" 180 python -m bench --suite train --epochs 1 --out "$RESULTS"
stage "serve" 60 python -m bench --suite serve --out "$RESULTS"
stage "pytest-bench" 90 python -m pytest bench --benchmark-only --bench-shapes large -q \
    -p no:cacheprovider --benchmark-json "$RESULTS/pytest-bench.json"
stage "llm" 240 python -m bench --suite llm --llm-prompts 8 --out "$RESULTS"
python -m bench --tables "$RESULTS" > "$RESULTS/tables.md" 2>&1
pack
echo "== done in ${SECONDS}s"
