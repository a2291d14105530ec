"""README.md's Python example runs as printed (a user pastes it)."""

import re
from pathlib import Path

import torch

import dcls

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_layers_example_runs_as_printed():
    section = README.read_text().split("## The layers: `import dcls`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README
    assert namespace["y"].shape == (8, 96, 56, 56)
    assert namespace["kernel"].shape == (96, 1, 17, 17)
    deployable = namespace["deployable"]
    assert not any(isinstance(m, dcls.Dcls2d) for m in deployable.modules())
    assert any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (17, 17)
               for m in deployable.modules())  # fmt: skip
