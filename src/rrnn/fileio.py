"""Atomic writes: a temp file in the same folder, then a rename over the target,
so a reader (or a run killed mid-write) never sees a half-written file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def _replacing(path: Path):
    """Yield a binary file in ``path``'s folder; on success, flush it to disk
    and rename it over ``path``; on any error, remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename over ``path``."""
    with _replacing(path) as f:
        torch.save(obj, f)


def atomic_write_text(path: Path, text: str) -> None:
    with _replacing(path) as f:
        f.write(text.encode())


def read_json(path: Path):
    """The JSON in ``path``, or None where it is missing, unreadable or not JSON
    (an undecodable byte included)."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def copy_file(src: Path, dst: Path) -> None:
    """Atomic copy (used for best.pt)."""
    with _replacing(dst) as f, open(src, "rb") as source:
        shutil.copyfileobj(source, f)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return set(value.split())
    except OSError:
        pass
    return set()


def machine() -> dict:
    """What a measurement ran on: CPU model, its widest vector instructions (a VM
    often shows only a vendor name, and the vector width sets what GEMMs and the
    fused kernels can do), cores, torch version and, where one is used, the GPU
    (for run summaries, reports, benchmarks and figures)."""
    found: dict[str, str] = {}  # the first "model name", "cpu family" and "model" lines
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in ("model name", "cpu family", "model"):
                found.setdefault(key, value)
    except OSError:
        pass
    cpu = found.get("model name") or platform.processor() or platform.machine()
    flags = cpu_flags()
    family, model = found.get("cpu family"), found.get("model")
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__}
    isa = next((name for flag, name in _ISA if flag in flags), None)
    if isa:
        info["isa"] = isa
    if family is not None and model is not None:
        info["cpu_id"] = f"family {family} model {model}"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# widest first: the first flag present names the machine's vector instructions
_ISA = (("avx512_bf16", "AVX-512 with bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
        ("avx", "AVX"), ("sve", "SVE"), ("asimd", "NEON"))  # fmt: skip


def describe_machine(info: dict) -> str:
    if "text" in info:  # given by hand for runs that did not record it
        return info["text"]
    detail = ", ".join(str(info[k]) for k in ("cpu_id", "isa") if info.get(k))
    text = (
        f"{info.get('cpu', '?')} ({detail + ', ' if detail else ''}{info.get('cores', '?')} cores), "
        f"torch {info.get('torch', '?')}"
    )
    return text + (f", {info['gpu']}" if info.get("gpu") else "")
