"""How a DCLS layer applies its constructed dense kernel: one module per algorithm.

* ``"direct"`` and ``"channels_last"`` (:mod:`dcls.algorithms.direct`): ``F.conv{1,2,3}d``, on
  the input and kernel as they are or in channels-last memory format.
* ``"fft"`` (:mod:`dcls.algorithms.fft`): a cross-correlation through ``torch.fft``, whose cost
  does not grow with the kernel area; stride 1.
* ``"split"`` (:mod:`dcls.algorithms.split`): depthwise, stride 1; the backward pass made of
  forward convolutions, 3-5x faster than PyTorch's depthwise backward on CPU.
* ``"auto"`` (:mod:`dcls.algorithms.auto`): a timed trial of the others per
  :class:`~dcls.algorithms.auto.ProblemKey`, checked once more after a while, cached for the
  process; :func:`auto_summary` tells what it chose.
* ``"triton"`` (:mod:`dcls.algorithms.triton`): a depthwise stride-1 convolution for large
  kernels written in Triton (forward, input and kernel gradient as ``torch.library`` custom
  ops); CUDA, or the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, for tests).

:mod:`dcls.algorithms.dispatch` holds the names, the argument checks and the dispatch every
layer's forward pass runs; ``_common`` the autocast and padding helpers the algorithms share.
All algorithms give the same outputs and gradients up to float rounding (about 1e-6 relative in
float32).

TorchScript and ``torch.jit.trace``: the functions a layer's forward pass reaches (the dispatch,
``direct``, ``channels_last``, the FFT core, the padding helpers) are TorchScript-compatible,
which is why they take lists, avoid starred list displays (``# noqa: RUF005``) and in-place
arithmetic on sizes (sizes are 0-d tensors under tracing). Scripted or traced, ``"split"`` runs
its forward convolution (its ``autograd.Function`` would be a Python call), ``"triton"`` and
``"auto"`` run ``"direct"``.
"""

from dcls.algorithms.auto import (
    RECHECK_AFTER,
    TRIAL_DROP_FACTOR,
    TRIAL_REPEATS,
    ProblemKey,
    TensorMeta,
    auto_cache,
    auto_summary,
    clear_auto_cache,
    settle_auto_choices,
)
from dcls.algorithms.dispatch import (
    CONV_ALGORITHMS,
    DEFAULT_CONV_ALGORITHM,
    check_conv_algorithm,
    convolve,
)
from dcls.algorithms.fft import fft_conv
from dcls.algorithms.split import split_conv
from dcls.algorithms.triton import autotune_summary, triton_available, triton_depthwise_conv

__all__ = [
    "CONV_ALGORITHMS",
    "DEFAULT_CONV_ALGORITHM",
    "RECHECK_AFTER",
    "TRIAL_DROP_FACTOR",
    "TRIAL_REPEATS",
    "ProblemKey",
    "TensorMeta",
    "auto_cache",
    "auto_summary",
    "autotune_summary",
    "check_conv_algorithm",
    "clear_auto_cache",
    "convolve",
    "fft_conv",
    "settle_auto_choices",
    "split_conv",
    "triton_available",
    "triton_depthwise_conv",
]
