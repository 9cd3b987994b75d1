"""The benchmark harness: what it records and writes (timings are not asserted)."""

import json

import pytest

from rrnn.bench import interleaved, markdown, run_grid
from rrnn.cli import main


def test_interleaved_blocks_count_calls():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    times = interleaved({"a": make("a"), "b": make("b")}, repeats=3, warmup=1, block=4)
    assert calls == {"a": 16, "b": 16}  # (1 warm-up + 3 timed) blocks of 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_grid_records_paths_and_ratios():
    records = run_grid(
        ("lstm", "rnn"),
        (0.5,),
        ("stream",),
        repeats=1,
        stream_repeats=2,
        stream_block=2,
        log=lambda m: None,
    )
    assert [(r["mode"], r["pass"]) for r in records] == [
        ("lstm", "forward+backward"),
        ("lstm", "forward"),
        ("rnn", "forward+backward"),
        ("rnn", "forward"),
    ]
    by = {(r["mode"], r["pass"]): r for r in records}
    assert by[("lstm", "forward")]["path"] == "stream"
    assert by[("lstm", "forward+backward")]["path"] == "shared-row"
    assert by[("rnn", "forward+backward")]["path"] == "reference"
    for r in records:
        assert r["speedup"] == r["torch_s"] / r["rrnn_s"]
        assert r["auto_vs_reference"] == r["reference_s"] / r["rrnn_s"]
        lo, hi = r["speedup_iqr"]
        assert 0 < lo <= hi
        assert r["latency_rrnn_s"] == r["rrnn_s"]  # one step
    table = markdown(records)
    assert table.count("\n") == 3 and "| stream (B=1, T=1, H=200, L=3) | LSTM | 0.5 |" in table


def test_the_recorded_path_is_the_one_timed_inside_frozen():
    """Inference is timed inside frozen(), where a GRU without shared rows streams
    (outside it would take torch's GRU): the record names the path that ran."""
    records = run_grid(("gru",), (0.0,), ("stream",), repeats=1, stream_repeats=1,
                       stream_block=1, log=lambda m: None)  # fmt: skip
    by = {r["pass"]: r for r in records}
    assert by["forward"]["path"] == "stream"


def test_bench_command_writes_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    assert (
        main(
            [
                "bench",
                "--cells",
                "gru",
                "--rates",
                "0.5",
                "--sizes",
                "stream",
                "--stream-repeats",
                "5",
                "--stream-block",
                "2",
                "--json",
                str(out_json),
                "--markdown",
                str(out_md),
            ]
        )
        == 0
    )
    data = json.loads(out_json.read_text())
    assert data["meta"]["stream_block"] == 2 and len(data["results"]) == 2
    assert out_md.read_text().startswith("| size | cell | r |")
    assert "[1/1] stream" in capsys.readouterr().out


def test_the_machine_names_its_vector_instructions(monkeypatch, tmp_path):
    """A VM may call its CPU just "AMD EPYC": every figure also says which vector
    instructions it had, and the CPU's family and model."""
    from pathlib import Path

    from rrnn import fileio

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse avx avx2 fma avx512f avx512bw\n"
    )
    real = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: real(cpuinfo if str(self) == "/proc/cpuinfo" else self, *a, **k)
    )
    info = fileio.machine()
    assert info["cpu"] == "AMD EPYC" and info["isa"] == "AVX-512"
    assert info["cpu_id"] == "family 25 model 17"
    assert fileio.describe_machine(info).startswith("AMD EPYC (family 25 model 17, AVX-512, ")
    assert fileio.cpu_flags() >= {"avx2", "avx512f"}
    assert fileio.describe_machine({"cpu": "X", "cores": 2, "torch": "t"}) == "X (2 cores), torch t"


@pytest.mark.parametrize("flag", ["--repeats", "--stream-repeats"])
def test_bench_refuses_too_few_repeats_for_a_median_and_its_range(flag, capsys):
    assert main(["bench", "--sizes", "stream", flag, "1"]) == 2
    assert f"{flag} 1: a ratio's median and interquartile range need at least 5" in (
        capsys.readouterr().err
    )
