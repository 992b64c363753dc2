"""The package's shape: no import loops, small modules, few loose ones, a serve path free of
offline code, and the import-linter contracts of docs/architecture.md."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service" / "tierroute"
MAX_MODULE_LINES = 800
MAX_LOOSE_MODULES = 8
# Libraries only training and evaluation need; `tierroute serve` must never load them.
TRAINING_LIBRARIES = ("sklearn", "skl2onnx", "onnx", "scipy", "matplotlib", "tqdm")


def import_loops(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every set of modules that import each other in a loop (Tarjan's strongly connected
    components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep import chain cannot hit the recursion limit.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    loops.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return loops


def package_graph() -> dict[str, set[str]]:
    """tierroute's imports, module to module: function-level and TYPE_CHECKING ones too."""
    graph = grimp.build_graph("tierroute", exclude_type_checking_imports=False)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def test_loop_finder_finds_a_planted_loop() -> None:
    """The loop finder reports a three-module loop and a self-import, and nothing else."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_loops(graph) == [["a", "b", "c"], ["e"]]


def test_the_package_has_no_import_loops() -> None:
    """No two tierroute modules import each other, directly or round a longer loop."""
    graph = package_graph()
    assert "tierroute.cascade.engine" in graph  # the graph really is the package's
    assert import_loops(graph) == []


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts]


def test_no_module_is_over_800_lines() -> None:
    """Every hand-written module stays at or under 800 lines."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_few_modules_stand_loose_at_the_package_top() -> None:
    """Besides the wings, at most eight modules sit directly in service/tierroute."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert "__main__.py" in loose
    assert len(loose) <= MAX_LOOSE_MODULES, loose


def test_the_import_contracts_hold() -> None:
    """import-linter keeps every contract in pyproject.toml (layers, serving vs offline, grpc)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None
    done = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _loaded_by(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(done.stdout.split())


def _training(modules: Iterable[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in TRAINING_LIBRARIES}


def test_listing_the_commands_loads_none_of_them() -> None:
    """`tierroute --help` builds its listing without importing any subcommand's module."""
    loaded = _loaded_by("from tierroute.__main__ import build_parser; build_parser(None)")
    assert {m for m in loaded if m.startswith(("tierroute.api", "tierroute.offline"))} == set()


def test_choosing_train_loads_its_module_but_no_training_library() -> None:
    """`tierroute train` registers from its own module; scikit-learn loads only when it runs."""
    loaded = _loaded_by("from tierroute.__main__ import build_parser; build_parser('train')")
    assert "tierroute.offline.cli.modelling" in loaded
    assert "tierroute.offline.cli.operations" not in loaded
    assert _training(loaded) == set()


def test_calling_a_server_loads_neither_the_server_nor_the_models() -> None:
    """`tierroute route` and `cascade` are clients: choosing them loads no server module and
    no onnxruntime (the wings' doors are lazy)."""
    loaded = _loaded_by(
        "from tierroute.__main__ import build_parser\n"
        "import tierroute.api.call_commands\n"
        "build_parser('route')"
    )
    assert "tierroute.api.call_commands" in loaded
    assert {m for m in loaded if m.startswith("tierroute.api.server")} == set()
    assert "onnxruntime" not in loaded


def test_reading_a_model_registry_does_not_load_onnxruntime() -> None:
    """`tierroute rollback` and `models` read registry files, not models."""
    loaded = _loaded_by("from tierroute.model import ModelRegistry, registry_summary")
    assert "tierroute.model.registry" in loaded
    assert "onnxruntime" not in loaded


def test_serve_imports_no_offline_or_training_module(tmp_path: Path) -> None:
    """`python -X importtime -m tierroute serve`, serving the bundled model on the replay
    backend, imports no offline module and none of the training libraries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_DATA="/nonexistent/tierroute-test-data",
        TIERROUTE_QUERYLOG_ENABLED="false",
        TIERROUTE_HTTP_PORT="0",
    )
    argv = [sys.executable, "-X", "importtime", "-m", "tierroute", "serve", "--port", "0"]
    # The import report is long: to a file, so a full pipe never stalls the server.
    report = tmp_path / "importtime.txt"
    with (
        report.open("w") as stderr,
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
    ):
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while "tierroute serving on" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    err = report.read_text()
    assert "tierroute serving on" in line, err[-2000:]
    imported = {
        row.rsplit("|", 1)[1].strip() for row in err.splitlines() if row.startswith("import time:")
    }
    assert "tierroute.api.server" in imported  # the importtime report is really read
    assert {m for m in imported if m.startswith("tierroute.offline")} == set()
    assert _training(imported) == set()
