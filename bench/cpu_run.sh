#!/usr/bin/env bash
# The committed CPU results (bench/results/cpu): every `python -m bench` suite on this machine's
# cores, then the pytest-benchmark files. Run it on a quiet machine (the load average is
# recorded with each suite); about 30 minutes on 2 cores, half of it RecBole's epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-bench/results/cpu}"
THREADS="${THREADS:-$(nproc)}"
"$PY" -m bench --suite train --epochs 2 --threads "$THREADS" --out "$OUT"
"$PY" -m bench --suite serve --threads "$THREADS" --out "$OUT"
"$PY" -m bench --suite kernels --shapes small train medium --rounds 10 --threads "$THREADS" --out "$OUT"
"$PY" -m bench --suite llm --threads "$THREADS" --out "$OUT"
"$PY" -m bench --suite scale --scale-sizes S M L --threads "$THREADS" --out "$OUT"
"$PY" -m pytest bench --benchmark-only -q -p no:cacheprovider --benchmark-json "$OUT/pytest-bench.json"
