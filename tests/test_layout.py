"""The package's structure (issue 19): no import cycle, counting function-local
imports; no import by string; the torch-op fallbacks import nothing of rrnn."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "rrnn").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """Every rrnn module ``name`` imports, anywhere in its body (``from . import x``
    counts as importing ``x`` where ``x`` is a module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in modules else target)
    return {m for m in out if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    order, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
                on.discard(part[-1])
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["rrnn.kernels.ops"] >= {"rrnn.kernels.fallbacks", "rrnn.kernels.native"}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def test_nothing_is_imported_by_string():
    for path in (SRC / "rrnn").rglob("*.py"):
        text = path.read_text()
        assert "import_module(" not in text and "__import__(" not in text, path


def test_the_torch_op_fallbacks_import_nothing_of_rrnn():
    modules = _modules()
    for name in ("rrnn.kernels.fallbacks", "rrnn.kernels.xent", "rrnn.torch_classes", "rrnn.timing"):
        assert _imports(name, modules[name], modules) == set(), name


def _modules_loaded_by(code: str) -> set[str]:
    import subprocess
    import sys

    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())


def test_help_and_params_run_without_torch():
    help_run = "from rrnn.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    for code in (help_run, "from rrnn.cli import main\nmain(['params'])",
                 "from rrnn.cli import build_parser\nbuild_parser()"):  # fmt: skip
        loaded = _modules_loaded_by(code)
        assert "torch" not in loaded, code
    assert "torch" in _modules_loaded_by("import rrnn\nrrnn.RestrictedLSTM")  # the layers do load it


def test_the_lazy_names_are_the_layers():
    import rrnn
    import rrnn.baselines as compress
    from rrnn import modules

    assert rrnn.RestrictedLSTM is modules.RestrictedLSTM
    assert compress.LowRankRNN.__module__ == "rrnn.baselines.lowrank"
    for name in rrnn.__all__:
        assert getattr(rrnn, name) is not None
    for name in compress.__all__:
        assert getattr(compress, name) is not None


def test_the_old_name_of_the_baselines_is_an_alias_that_warns():
    import subprocess
    import sys

    probe = (
        "import warnings\nwarnings.simplefilter('error')\n"
        "try:\n    import rrnn.compress\nexcept DeprecationWarning as w:\n    print(w)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "rrnn.compress is now rrnn.baselines" in done.stdout, done.stderr
    import warnings

    import rrnn.baselines as new

    with warnings.catch_warnings():  # the warning itself is checked above, in a fresh process
        warnings.simplefilter("ignore", DeprecationWarning)
        import rrnn.compress as old
        from rrnn.compress.prune import GradualPruner
    assert old.LowRankRNN is new.LowRankRNN and old.dense_count is new.dense_count
    assert GradualPruner is new.GradualPruner and set(old.__all__) == set(new.__all__)


def test_the_command_lines_choices_are_the_librarys():
    from rrnn.lm import config, data

    assert set(config.DATASETS) == set(data.BUILTIN)


def test_kernels_read_no_private_attribute_of_a_layer():
    """kernels/ and the export forms talk to a layer through the documented
    protocol (rrnn.kernels' docstring), never through its underscore attributes."""
    names = ("module", "layer", "stack", "lstm")
    files = [*(SRC / "rrnn" / "kernels").glob("*.py"), SRC / "rrnn" / "deploy.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in names and node.attr.startswith("_")
                    and not node.attr.startswith("__")):  # fmt: skip
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert found == []


def test_the_c_prototypes_are_the_one_ctypes_signature():
    """native binds each kernel with the types read from cells.c's prototypes; a
    step operator passes (B, s, q) and then one pointer per tensor of its schema,
    so the schema and the prototype must agree in count: checked here, never at a
    call (where too few arguments would be undefined behaviour)."""
    import ctypes

    import torch

    from rrnn.kernels import native, ops  # noqa: F401  (ops registers the schemas)

    signatures = native.c_signatures(native.SOURCE.read_text())
    step_ops = {"lstm_step": "lstm_fwd", "lstm_step_backward": "lstm_bwd",
                "gru_step": "gru_fwd", "gru_step_backward": "gru_bwd"}  # fmt: skip
    for op, c_name in step_ops.items():
        schema = getattr(torch.ops.rrnn, op).default._schema
        tensors = [a for a in schema.arguments if str(a.type) == "Tensor"]
        assert signatures[c_name] == [ctypes.c_int64] * 3 + [ctypes.c_void_p] * len(tensors), op
    assert signatures["xent"][6] is ctypes.c_double  # the scale, by value
    assert set(signatures) >= {"lstm_bwd_out", "gru_bwd_out", "lstm_stream"}
    wrong = "void rrnn_bad_##SUF(int64_t B, float scale, T *x) {"
    try:
        native.c_signatures(wrong)
    except RuntimeError as err:
        assert "float scale" in str(err)
    else:
        raise AssertionError("a by-value float must be refused")


def test_no_function_over_80_lines_and_no_class_over_250():
    """Issue 19's limits on the package (a function reads in one screen, a class
    holds one job); the check is shown failing on a made-up long function."""

    def too_long(source: str) -> list[str]:
        found = []
        for node in ast.walk(ast.parse(source)):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 80:
                found.append(f"def {node.name}: {size} lines")
            elif isinstance(node, ast.ClassDef) and size > 250:
                found.append(f"class {node.name}: {size} lines")
        return found

    assert too_long("def f():\n" + "    x = 1\n" * 80) == ["def f: 81 lines"]
    found = [f"{p.relative_to(SRC)} {item}" for p in sorted((SRC / "rrnn").rglob("*.py"))
             for item in too_long(p.read_text())]  # fmt: skip
    assert found == []
