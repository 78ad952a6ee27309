"""Test setup: kernels run through the Triton CPU interpreter.

TRITON_INTERPRET must be in the environment before ``llm4sbr.kernels`` defines its
``@triton.jit`` functions, so it is set here, before any test module imports the package.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(2)

settings.register_profile(
    "llm4sbr",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("llm4sbr")


@pytest.fixture
def reference_path():
    """Run the kernels' pure-PyTorch references (and the padded model path), not the Triton
    interpreter or the packed CPU path: for tests of models, training and serving."""
    from llm4sbr.kernels import use_backend

    with use_backend("torch"):
        yield


@pytest.fixture
def one_thread():
    """For tests of tiny tensors: a second OpenMP thread only adds contention with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
