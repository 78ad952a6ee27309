#!/usr/bin/env bash
# The GPU benchmarks in one go, for a CUDA machine with no network (torch + triton
# preinstalled, no bitsandbytes). Writes everything under $OUT:
#   $OUT/kernel-tests.txt  tests/kernels on CUDA tensors (fp32 and bf16, Triton compiled for the
#                      GPU, not interpreted), run first: the benchmarks only start when the
#                      kernels are correct on this GPU
#   $OUT/results/      python -m bench: kernels (small, train, large), serve, train (our models;
#                      RecBole is skipped unless .venv-recbole exists), llm (random-weight
#                      SmolLM2-135M and 7B Qwen2-style models, bf16 vs NF4)
#   $OUT/pytest-bench.json   pytest bench --benchmark-only at the large shape
# Carry in .wheels/ the bitsandbytes wheel (pip download --no-deps --only-binary=:all:
# --platform manylinux_2_24_x86_64 --python-version 3.12 bitsandbytes==0.50.2 -d .wheels) and
# the recbole 1.2.1 wheel, whose MovieLens-100k files the train suite reads (installed with
# --no-deps: data only); without them the 4-bit runs and the train suite record why they did
# not run. About 6-8 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
for wheel in .wheels/bitsandbytes-*.whl .wheels/recbole-*.whl; do
    [ -f "$wheel" ] && python -m pip install --quiet --no-deps --no-index "$wheel"
done
python -m pip install --quiet --no-deps --no-build-isolation --no-index -e . >/dev/null
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"

# TRITON_INTERPRET=0: tests/conftest.py defaults it to 1 (the CPU interpreter), and
# tests/kernels refuses LLM4SBR_TEST_DEVICE=cuda under the interpreter (usage error, exit 4), as it
# does without a GPU: with pipefail a failed or refused kernel run stops the script here. The
# sm_90 compile tests are left out: they compile on the CPU, which the real launches just did.
LLM4SBR_TEST_DEVICE=cuda TRITON_INTERPRET=0 python -m pytest tests/kernels -q -p no:cacheprovider \
    -k "not compile_for_sm90" | tee "$OUT/kernel-tests.txt"

run() { echo "== $*" >&2; timeout 540 "$@" || echo "!! exit $? from: $*" >&2; }
run python -m bench --suite kernels --shapes small train large --rounds 20 --out "$OUT/results"
run python -m bench --suite serve --out "$OUT/results"
run python -m bench --suite train --epochs 1 --out "$OUT/results"
run python -m bench --suite llm --llm-prompts 8 --out "$OUT/results"
run python -m pytest bench --benchmark-only --bench-shapes large -q -p no:cacheprovider \
    --benchmark-json "$OUT/pytest-bench.json"
python -m bench --tables "$OUT/results" > "$OUT/tables.md"
