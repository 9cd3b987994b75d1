"""`rrnn params`: Table II beside our exact counts."""

import json

from rrnn import restriction as R
from rrnn.cli import main


def test_params_reproduces_table_ii(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert "24 of 24" in out and "9,800" in out
    assert f"{R.count_parameters('lstm', 200, 200, 3, 0.5):,}" in out


def test_params_json_other_sizes(capsys):
    assert (
        main(
            [
                "params",
                "--cells",
                "gru",
                "--rates",
                "0,0.5",
                "--hidden-size",
                "650",
                "--layers",
                "2",
                "--json",
            ]
        )
        == 0
    )
    table = json.loads(capsys.readouterr().out)
    assert table["offset"] == 0 and "paper" not in table["rows"]["gru"]
    assert table["rows"]["gru"]["exact"] == [
        R.count_parameters("gru", 200, 650, 2, r) for r in (0, 0.5)
    ]


def test_params_bad_cell(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["params", "--cells", "transformer"])
    assert "unknown cell 'transformer'" in capsys.readouterr().err
