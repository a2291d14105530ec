"""Fixtures of the Triton tests (``test_triton.py``, ``test_triton_construct.py``): without a GPU
their kernels run in Triton's CPU interpreter, on the CPU device."""

import pytest
import torch


@pytest.fixture(scope="module")
def triton_interpreter():
    """Triton's interpreter on for the requesting module when there is no GPU, and no TF32 in
    cuDNN (float32 comparisons at 1e-5); both undone afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        if not torch.cuda.is_available():
            mp.setenv("TRITON_INTERPRET", "1")
        mp.setattr(torch.backends.cudnn, "allow_tf32", False)
        yield


@pytest.fixture
def device() -> torch.device:
    """Where the Triton kernels run: CUDA, else the CPU under the interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
