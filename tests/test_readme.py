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
