"""The README's Python block runs as written and does what its comments say."""

import math
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_python_block_runs():
    blocks = python_blocks()
    assert len(blocks) == 1, f"README.md has {len(blocks)} python blocks; this test knows one"
    ns: dict = {}
    exec(compile(blocks[0], str(README), "exec"), ns)
    y, native, model, logits, loss, new = (ns[k] for k in ("y", "native", "model", "logits", "loss", "new"))
    assert y.planes.shape == (2, 4, 16) and y.planes.dtype == torch.float16
    assert native.dtype == torch.complex64 and torch.equal(native.real, y.real.float())
    assert logits.shape == (2, 64, model.config.vocab_size) and logits.dtype == torch.float32
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(model.config.vocab_size)) < 1.0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert new.shape == (1, 5) and int(new.max()) < model.config.vocab_size
