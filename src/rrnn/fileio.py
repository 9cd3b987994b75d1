"""Result files: atomic writes (a temp file in the same folder, then a rename over
the target, so a reader, or a run killed mid-write, never sees a half-written
file), damaged files kept aside rather than replaced, and OS errors in one line.

A target that is a symlink is written through (its target is replaced); one that
is a device or a pipe (``/dev/stdout``, ``/dev/null``) is written directly, since
renaming over it would replace the device node; a folder is refused."""

from __future__ import annotations

import errno
import io
import json
import os
import platform
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


def _target(path: Path) -> tuple[Path, bool]:
    """(the file to write, whether it can be replaced atomically)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # write through the link, keep the link
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path, True
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file: give a file name", str(path))
    return path, stat.S_ISREG(mode)


@contextmanager
def _replacing(path: Path):
    """Yield a binary file for ``path``; on success, flush it to disk and rename it
    over ``path``; on any error, remove it (the old file stays as it was). A device
    or pipe is opened and written as it is."""
    path, regular = _target(path)
    if not regular:
        with open(path, "wb") as f:
            yield f
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
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
    """torch.save, atomically. Serialised in memory first: torch's own file writer
    turns a full disk into "[enforce fail at inline_container.cc] unexpected pos",
    while a plain write raises the OS's "No space left on device"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with _replacing(path) as f:
        f.write(buffer.getbuffer())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path) as f:
        f.write(data)


def load_json(path: Path) -> tuple[object | None, str | None]:
    """``(content, None)``; ``(None, None)`` where ``path`` does not exist;
    ``(None, why)`` where it exists but cannot be read as JSON."""
    try:
        return json.loads(Path(path).read_bytes()), None
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError as err:
        return None, f"byte {err.start} is not UTF-8"
    except ValueError as err:
        return None, f"not JSON ({err})"
    except OSError as err:
        return None, err.strerror or str(err)


def set_aside(path: Path, why: str, log=print) -> Path:
    """Keep a damaged ``path`` as ``path.corrupt`` (``.corrupt.1``, ... if taken),
    say so through ``log``, and return the copy's path; the caller then writes a
    fresh file."""
    path = Path(path)
    keep = path.with_name(path.name + ".corrupt")
    n = 0
    while keep.exists():
        n += 1
        keep = path.with_name(f"{path.name}.corrupt.{n}")
    shutil.copy2(path, keep)
    log(f"warning: {path} is damaged ({why}); kept as {keep.name}, a new one is written")
    return keep


def explain_os_error(err: OSError) -> str:
    """One line for an ordinary OS condition, with what to do about it."""
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device{where}; free some space and run the same "
                "command again (a run resumes with --resume from its last complete "
                "checkpoint, which a failed write leaves as it was)")  # fmt: skip
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied{where}; pick a folder you can write (--out), or fix "
                "its permissions")  # fmt: skip
    if err.errno == errno.EROFS:
        return f"read-only file system{where}; pick a writable folder (--out)"
    if err.errno == errno.ENAMETOOLONG:
        return f"a file name is too long for the file system{where}; use a shorter name"
    return f"{err.strerror or err}{where}"


def read_json(path: Path):
    """The JSON in ``path``, or None where it is missing, unreadable or not JSON
    (an undecodable byte included)."""
    return load_json(path)[0]


def copy_file(src: Path, dst: Path) -> None:
    """Atomic copy (used for best.pt)."""
    with _replacing(dst) as f, open(src, "rb") as source:
        shutil.copyfileobj(source, f)


def cache_root() -> Path:
    """Where rrnn caches what it builds (kernels, measured dispatch, token tensors):
    ``$RRNN_CACHE_DIR`` (``~`` expanded), else ``~/.cache/rrnn``; one subfolder each."""
    env = os.environ.get("RRNN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rrnn"


def cpu_info() -> dict[str, str]:
    """The first value of each field of Linux's /proc/cpuinfo (``"model name"``,
    ``"flags"``, ``"cpu family"``, ...; the first CPU's); empty elsewhere. The one
    reader of that file: the kernels' build hash, the dispatch key and
    :func:`machine` all read it here."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key:
            found.setdefault(key, value)
    return found


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``; empty elsewhere)."""
    info = cpu_info()
    return set((info.get("flags") or info.get("Features") or "").split())


def machine() -> dict:
    """What a measurement ran on: CPU model, its widest vector instructions (a VM
    often shows only a vendor name, and the vector width sets what GEMMs and the
    fused kernels can do), cores, torch version and, where one is used, the GPU
    (for run summaries, reports, benchmarks and figures)."""
    found = cpu_info()
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


def describe_machines(infos) -> list[str]:
    """The distinct descriptions of ``infos`` (machine records, empty ones skipped),
    sorted: one line each in a report's or a figure's caption."""
    return sorted({describe_machine(info) for info in infos if info})
