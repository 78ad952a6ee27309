"""LLM4SBR's benchmarks (not installed with the package; run from the repository root).

``python -m bench`` runs the suites (``kernels``, ``train``, ``serve``, ``llm``) into a results
folder; ``pytest bench --benchmark-only`` runs the per-call cases under pytest-benchmark. Both use
the harness in :mod:`bench.harness`. See ``bench/README.md``.
"""
