"""The README's Python example runs as written, and its printed numbers hold."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "no python example in the README"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "RestrictedLSTM(200, 200, num_layers=3, sharing_rate=0.5, params=542,700)"
    assert printed[1] == "542700"
    # the comments in the example say what it prints
    assert "params=542,700" in blocks[0] and "# 542700" in blocks[0]


def test_the_iss_library_example_compresses(capsys):
    text = (README.parent / "docs" / "compression.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "reg.cut" in b]
    exec(compile(block, "docs/compression.md", "exec"), {})
    widths, params = capsys.readouterr().out.split("]")
    # units removed from both 32-wide layers, within the budget given to reg.cut (which
    # units go follows the trained norms: the comment's numbers are this machine's)
    assert all(w < 32 for w in map(int, widths.strip("[ ").split(",")))
    assert int(params) <= 8000
    assert "# [20, 25] 7740" in block
