"""dcls.positions: the statistics logged each epoch, hand-computed."""

import pytest
import torch

import dcls


def test_position_statistics_are_the_hand_computed_values():
    layer = dcls.Dcls2d(1, 2, 2, dilated_kernel_size=(5, 7), groups=1, version="bilinear")
    with torch.no_grad():  # limits: rows [-2, 2], columns [-3, 3]
        layer.P.copy_(torch.tensor([[[[-2.0, 0.5]], [[1.0, 2.0]]], [[[3.0, 0.0]], [[-1.5, -3.0]]]]))
    stats = dcls.position_statistics(layer)
    assert stats["position_count"] == 8
    assert stats["position_abs_mean"] == pytest.approx((2 + 0.5 + 1 + 2 + 3 + 0 + 1.5 + 3) / 8)
    assert stats["position_at_border"] == pytest.approx(4 / 8)  # -2 and 2 (rows), 3 and -3


def test_position_statistics_leave_out_axes_of_size_1():
    """A coordinate on a size-1 axis is always 0, on both limits: it counted as at the border
    (0.5 for a fresh (7, 1) layer)."""
    layer = dcls.Dcls2d(2, 2, 3, dilated_kernel_size=(7, 1), groups=2, version="bilinear")
    with torch.no_grad():
        layer.P[0].fill_(1.0)  # inside the rows' limits [-3, 3]
    stats = dcls.position_statistics(layer)
    assert stats == {"position_abs_mean": 1.0, "position_at_border": 0.0, "position_count": 6.0}
    assert dcls.position_statistics(torch.nn.Linear(2, 2)) == {}
