"""Layer-wise lr decay for models whose stages own shared DCLS positions."""

from __future__ import annotations

from typing import Any

import dcls


def with_shared_positions(
    matcher: dict[str, Any], stage_prefix: str, coarse: bool
) -> dict[str, Any]:
    """Extend a timm ``group_matcher`` so ``<stage_prefix>N.dcls_positions`` joins stage N's
    first block (timm's patterns miss it, which would give it the top layer's lr scale).

    Args:
        matcher: the base model's ``group_matcher(coarse)``.
        stage_prefix: regex of a stage's name up to its index, e.g. ``r"^stages\\."``.
        coarse: coarse matchers already group by stage and are returned unchanged.
    """
    if coarse:
        return matcher
    blocks = matcher["blocks"]
    blocks = [(blocks, None)] if isinstance(blocks, str) else list(blocks)
    positions = (rf"{stage_prefix}(\d+)\.{dcls.SHARED_POSITIONS_NAME}", (0,))
    return {**matcher, "blocks": [*blocks, positions]}
