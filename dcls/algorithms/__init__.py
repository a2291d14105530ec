"""How a DCLS layer applies its constructed dense kernel: one module per algorithm.

* ``"direct"`` and ``"channels_last"`` (:mod:`dcls.algorithms.direct`): ``F.conv{1,2,3}d``, on
  the input and kernel as they are or in channels-last memory format.
* ``"fft"`` (:mod:`dcls.algorithms.fft`): a cross-correlation through ``torch.fft``, whose cost
  does not grow with the kernel area; stride 1.
* ``"split"`` (:mod:`dcls.algorithms.split`): depthwise, stride 1; the backward pass made of
  forward convolutions, 3-5x faster than PyTorch's depthwise backward on CPU.
* ``"auto"`` (:mod:`dcls.algorithms.auto`): a one-time timed trial of the others per
  :class:`~dcls.algorithms.auto.ProblemKey`, cached for the process.
* A GPU kernel (``triton``, being written as ``dcls/triton_conv.py``) gets its own module here,
  ``triton.py``, and joins the names and the dispatch in :mod:`dcls.algorithms.dispatch` and
  the candidates in :mod:`dcls.algorithms.auto`.

:mod:`dcls.algorithms.dispatch` holds the names, the argument checks and the dispatch every
layer's forward pass runs; ``_common`` the autocast and padding helpers the algorithms share.
All algorithms give the same outputs and gradients up to float rounding (about 1e-6 relative in
float32).

TorchScript and ``torch.jit.trace``: the functions a layer's forward pass reaches (the dispatch,
``direct``, ``channels_last``, the FFT core, the padding helpers) are TorchScript-compatible,
which is why they take lists, avoid starred list displays (``# noqa: RUF005``) and in-place
arithmetic on sizes (sizes are 0-d tensors under tracing). Scripted or traced, ``"split"`` runs
its forward convolution (its ``autograd.Function`` would be a Python call) and ``"auto"`` runs
``"direct"``.
"""

from dcls.algorithms.auto import (
    TRIAL_DROP_FACTOR,
    TRIAL_REPEATS,
    ProblemKey,
    TensorMeta,
    auto_cache,
    clear_auto_cache,
)
from dcls.algorithms.dispatch import (
    CONV_ALGORITHMS,
    DEFAULT_CONV_ALGORITHM,
    check_conv_algorithm,
    convolve,
)
from dcls.algorithms.fft import fft_conv
from dcls.algorithms.split import split_conv

__all__ = [
    "CONV_ALGORITHMS",
    "DEFAULT_CONV_ALGORITHM",
    "TRIAL_DROP_FACTOR",
    "TRIAL_REPEATS",
    "ProblemKey",
    "TensorMeta",
    "auto_cache",
    "check_conv_algorithm",
    "clear_auto_cache",
    "convolve",
    "fft_conv",
    "split_conv",
]
