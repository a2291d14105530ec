"""Known-answer demo: a Dcls2d learns where the taps of a hidden convolution are.

A depthwise convolution whose kernel elements sit at known real-valued positions produces targets
from white-noise images; a freshly initialised ``Dcls2d`` (positions started up to
``--init-offset`` pixels away) is fitted to them with Adam. Prints the position error before and
after, and exits with status 1 if the final error exceeds ``--tolerance`` pixels.

    python scripts/fit_positions.py --version gauss --steps 300
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

import torch
import torch.nn.functional as F

import dcls
from dcls.functional import construct_kernel
from engine.config import cli_number, run_entry_point

_logger = logging.getLogger("fit_positions")


def fit_positions(
    version: str = "bilinear",
    channels: int = 6,
    kernel_count: int = 1,
    size: int = 9,
    init_offset: float = 0.7,
    steps: int = 400,
    lr: float = 0.05,
    position_warmup: float = 0.2,
    seed: int = 0,
) -> tuple[float, float]:
    """Fit a Dcls2d to a hidden DCLS convolution; return the max position error before and after.

    Returns:
        ``(initial_error, final_error)`` in pixels (max over all kernel elements and axes).
    """
    torch.manual_seed(seed)  # the layer's own initialisation
    generator = torch.Generator().manual_seed(seed)
    half = size // 2 - 1
    true_p = (torch.rand(2, channels, 1, kernel_count, generator=generator) * 2 - 1) * half
    true_w = torch.rand(channels, 1, kernel_count, generator=generator) + 0.5
    layer = dcls.Dcls2d(
        channels,
        channels,
        kernel_count,
        padding=size // 2,
        dilated_kernel_size=size,
        groups=channels,
        bias=False,
        version=version,
    )
    true_sig = None if layer.SIG is None else layer.SIG.detach().clone()
    true_kernel = construct_kernel(true_w, true_p, true_sig, (size, size), version)
    with torch.no_grad():
        offset = (torch.rand(true_p.shape, generator=generator) * 2 - 1) * init_offset
        layer.P.copy_(true_p + offset)
    initial_error = (layer.P - true_p).abs().max().item()
    # Positions wait until the weights have found their sign: a tap whose weight starts with the
    # wrong sign is pushed away from its target and can leave the 1-pixel reach of bilinear.
    optimizer = torch.optim.Adam(
        dcls.param_groups(layer, weight_decay=0.0, positions_lr_scale=1.0), lr=lr
    )
    frozen = int(steps * position_warmup)

    def weights_factor(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * step / steps))

    def positions_factor(step: int) -> float:
        return 0.0 if step < frozen else weights_factor(step)

    factors = [
        positions_factor if "positions" in g["name"] else weights_factor
        for g in optimizer.param_groups
    ]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    for step in range(steps):
        images = torch.randn(8, channels, 24, 24, generator=generator)
        target = F.conv2d(images, true_kernel, padding=size // 2, groups=channels)
        loss = F.mse_loss(layer(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        layer.clamp_parameters()
        if step % 50 == 0:
            _logger.info(
                "step %4d  loss %.3e  max position error %.3f px",
                step,
                loss.item(),
                (layer.P - true_p).abs().max().item(),
            )
    return initial_error, (layer.P - true_p).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="bilinear", choices=dcls.VERSIONS)
    parser.add_argument("--steps", type=cli_number(), default=400)
    parser.add_argument("--lr", type=cli_number(float, 0, strict=True), default=0.05)
    parser.add_argument("--init-offset", type=float, default=0.7)
    parser.add_argument("--tolerance", type=cli_number(float, 0, strict=True), default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    before, after = fit_positions(
        args.version, init_offset=args.init_offset, steps=args.steps, lr=args.lr, seed=args.seed
    )
    _logger.info(
        "max position error: %.3f px at start -> %.4f px after %d steps (%s)",
        before,
        after,
        args.steps,
        args.version,
    )
    return 0 if after <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
