"""The paper's numbers recorded as targets, each with its source."""

from engine.evaluation.paper import DOWNSTREAM, PAPER, RELEASED_CHECKPOINTS, paper_value

SOURCES = {"readme", "paper-v4 (extracted)", "readme-downstream"}


def test_every_target_has_a_known_source():
    for table in (PAPER, DOWNSTREAM):
        for metrics in table.values():
            assert metrics and all(source in SOURCES for _, source in metrics.values())
    assert all(entry["source"] in SOURCES for entry in RELEASED_CHECKPOINTS.values())


def test_the_headline_numbers():
    """README L68-75 (top-1), the v4 tables as extracted (robustness, V100 throughput)."""
    top1 = {
        f"convnext_{s}{v}": paper_value(f"convnext_{s}{v}", "top1")
        for s in ("tiny", "small", "base")
        for v in ("", "_dcls")
    }
    assert top1 == {
        "convnext_tiny": 82.1,
        "convnext_tiny_dcls": 82.5,
        "convnext_small": 83.1,
        "convnext_small_dcls": 83.7,
        "convnext_base": 83.8,
        "convnext_base_dcls": 84.1,
    }
    assert [paper_value(f"convnext_{s}_dcls", "throughput") for s in ("tiny", "small", "base")] == [
        725.3,
        433.4,
        285.4,
    ]
    assert paper_value("convnext_base_dcls", "in_c_bar_error") == 34.3  # ImageNet-C-bar
    assert paper_value("convnext_base_dcls", "in_c_error") is None  # no ImageNet-C number
    assert paper_value("resnet50_dcls", "top1") is None  # not found: no invented number
    assert DOWNSTREAM["convnext_tiny_dcls"]["coco_box_ap"][0] == 51.2
    released = RELEASED_CHECKPOINTS["convnext_dcls_base_1k_224_ema.pth"]
    assert (released["top1"], released["top5"]) == (84.094, 96.958)
