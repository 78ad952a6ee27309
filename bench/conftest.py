"""pytest-benchmark setup for ``pytest bench --benchmark-only``.

The setups come from :mod:`bench.kernels` and :mod:`bench.model`, the same as ``python -m bench``
runs. Options:

* ``--bench-device auto|cpu|cuda`` (default auto: CUDA when available);
* ``--bench-shapes small,train,...``: kernel shapes from ``bench.harness.SHAPES`` (default: all
  on CUDA; ``small`` on CPU, where the larger ones belong to ``python -m bench``);
* ``--bench-rounds N``: timed rounds per case (default 20 on CUDA, 5 on CPU).

Cases that cannot run on the device (the triton provider without CUDA) are skipped with the
reason. Each case's ``extra_info`` holds its peak memory (MiB above the inputs), the device name,
torch/triton/CUDA versions and the thread count.
"""

from __future__ import annotations

import pytest
import torch

from bench.harness import SHAPES, environment


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm4sbr benchmarks")
    group.addoption("--bench-device", default="auto", help="auto (CUDA when available), cpu or cuda")
    group.addoption("--bench-shapes", default=None, help=f"comma-separated kernel shapes from {list(SHAPES)}")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds per case")


def _device(config: pytest.Config) -> torch.device:
    name = config.getoption("--bench-device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shape_name" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--bench-shapes")
        default = list(SHAPES) if _device(metafunc.config).type == "cuda" else ["small"]
        names = chosen.split(",") if chosen else default
        unknown = sorted(set(names) - set(SHAPES))
        if unknown:
            raise pytest.UsageError(f"--bench-shapes: unknown {unknown}; choose from {list(SHAPES)}")
        metafunc.parametrize("shape_name", names)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    return _device(request.config)


@pytest.fixture(scope="session")
def rounds(request: pytest.FixtureRequest, device: torch.device) -> int:
    return request.config.getoption("--bench-rounds") or (20 if device.type == "cuda" else 5)


@pytest.fixture(scope="session")
def machine(device: torch.device) -> dict:
    """Device name, versions and threads, recorded in every case's extra_info."""
    env = environment(device)
    return {k: env[k] for k in ("device_name", "torch", "triton", "cuda", "threads", "load_average")}
