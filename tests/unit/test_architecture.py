"""Arrows point down (docs/architecture.md, "Layers and imports"): the agent never imports Qt or the desktop
package; the controller core never imports gRPC or protobuf."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_AGENT = ("PySide6", "pyqtgraph", "tensorfleet_desktop", "shiboken6")
HEAVY = ("torch", "pymongo", "minio", "PySide6", "pyqtgraph", "safetensors")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_agent_sources_never_import_qt_or_desktop() -> None:
    offenders = []
    for path in (ROOT / "agent").rglob("*.py"):
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_AGENT:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_every_agent_module_imports_without_heavy_packages(tmp_path: Path) -> None:
    """Import every module with torch, Qt and database drivers made unimportable, then run a daemon."""
    script = textwrap.dedent(
        f"""
        import asyncio, importlib, pkgutil, sys, pathlib
        BLOCKED = {HEAVY!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked for this test: {{name}}")
                return None
        sys.meta_path.insert(0, Block())
        import tensorfleet_agent
        for mod in pkgutil.walk_packages(tensorfleet_agent.__path__, "tensorfleet_agent."):
            importlib.import_module(mod.name)

        from tensorfleet_agent.daemon import AgentConfig, AgentDaemon
        from tensorfleet_agent.rpc.client import AgentClient
        from tensorfleet_agent.core.types import TaskSpec

        async def main():
            d = AgentDaemon(AgentConfig(data_dir=pathlib.Path({str(tmp_path)!r}), host="127.0.0.1", port=0,
                                        interfaces=["127.0.0.1"], cpu_slots=1,
                                        insecure=True))  # this test is about imports, not pairing
            await d.start()
            async with AgentClient(f"127.0.0.1:{{d.port}}") as c:
                await c.get_info()
                await c.run_task(TaskSpec("t1", "j", "noop"))
                events = [e async for e in c.watch_task("t1")]
                assert events[-1].payload.status.value == "SUCCEEDED", events
            await d.stop()
        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED + ("tensorfleet_desktop",))
        assert not loaded, loaded
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_controller_cli_and_sdk_never_import_qt() -> None:
    """Only tensorfleet_desktop/ui may touch Qt; the controller core, store, SDK and CLI stay headless."""
    offenders = []
    for path in (ROOT / "tensorfleet_desktop").rglob("*.py"):
        if "ui" in path.relative_to(ROOT / "tensorfleet_desktop").parts[:1]:
            continue
        for name in _imports(path):
            if name.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_generated_protobuf_stays_at_the_edge() -> None:
    """Protobuf types are used only by the conversion, service and client modules."""
    allowed = {
        "agent/rpc/convert.py",
        "agent/rpc/service.py",
        "agent/rpc/client.py",
        "agent/rpc/task_stream_agent.py",  # AgentService.Tasks, both sides (the journal's bytes wrapped by hand)
        "agent/rpc/task_stream_caller.py",
        "agent/rpc/join.py",  # the agent's one call to a controller (JoinCluster, issue 25)
        "agent/security/interceptor.py",
        "tensorfleet_desktop/controller/service.py",
        "tensorfleet_desktop/wire.py",
        "tensorfleet_desktop/client/aio.py",
    }
    users = set()
    for folder in ("agent", "tensorfleet_desktop"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel.startswith("agent/_generated"):
                continue
            if any(name.startswith("tensorfleet_agent._generated") for name in _imports(path)):
                users.add(rel)
    assert users <= allowed, sorted(users - allowed)


def test_the_gui_is_a_client_of_the_controller_service() -> None:
    """The window renders what ControllerService streams: it never reaches into the scheduler or the store."""
    forbidden = ("core", "scheduler", "fleet", "service", "store")
    offenders = []
    for path in (ROOT / "tensorfleet_desktop" / "ui").rglob("*.py"):
        for name in _imports(path):
            parts = name.split(".")
            if parts[:1] == ["tensorfleet_desktop"] and (
                parts[1:2] == ["store"] or (parts[1:2] == ["controller"] and parts[2:3] and parts[2] in forbidden)
            ):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


#: The controller's edge: the gRPC service and the tables from core errors to failure kinds and status codes, the
#: fleet of agent connections and its AgentPort adapter, the TLS/token security, the app that wires them (and its
#: Prometheus file_sd writer, which reads the fleet), the HTTP face (http/) and what both faces share beyond the
#: core (operations.py: it may reach the fleet). Everything else in controller/ is the core: it knows no wire.
CONTROLLER_EDGE = {
    "service.py",
    "operations.py",
    "failures.py",
    "rpc_errors.py",
    "agent_link.py",
    "fleet.py",
    "security.py",
    "app.py",
    "prometheus_sd.py",
    "pools/members.py",  # JoinCluster's certificate check and the pool manager's view of the fleet
    "pools/setup.py",  # wires the pool manager to the fleet and the app
}
WIRE_PACKAGES = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "tensorfleet_agent._generated")
WIRE_MODULES = (
    "tensorfleet_agent.rpc",
    *(
        f"tensorfleet_desktop.controller.{name.removesuffix('.py').replace('/', '.')}"
        for name in sorted(CONTROLLER_EDGE)
    ),
)


def _core_modules() -> list[Path]:
    controller = ROOT / "tensorfleet_desktop" / "controller"
    return sorted(
        p
        for p in controller.rglob("*.py")
        if p.relative_to(controller).as_posix() not in CONTROLLER_EDGE and p.relative_to(controller).parts[0] != "http"
    )


def _runtime_imports(path: Path) -> set[str]:
    """What the module imports when it runs: `if TYPE_CHECKING:` blocks left out."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_controller_core_imports_no_grpc_and_no_protobuf() -> None:
    """The core raises its own errors and talks to agents through the AgentPort; gRPC stays at the edge."""
    offenders = []
    for path in _core_modules():
        for name in _runtime_imports(path):
            if name.startswith(WIRE_PACKAGES + WIRE_MODULES):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_importing_the_controller_core_loads_no_grpc_even_indirectly() -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _core_modules()
        if p.name != "mongo.py"  # needs pymongo, which imports no gRPC either; not installed everywhere
    ]
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        wire = {WIRE_PACKAGES + WIRE_MODULES!r}
        loaded = sorted(m for m in sys.modules if m.startswith(wire))
        assert not loaded, loaded
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


#: ui modules whose docstrings promise "no Qt" (job_history's arrays are built on the bridge's asyncio thread;
#: formatting is plain functions): neither may pull Qt in, directly or through what they import.
QT_FREE_UI = ("tensorfleet_desktop/ui/job_history.py", "tensorfleet_desktop/ui/formatting.py")


def test_the_ui_modules_that_say_no_qt_import_no_qt() -> None:
    qt = ("PySide6", "pyqtgraph", "shiboken6")
    offenders = [
        f"{rel} imports {name}" for rel in QT_FREE_UI for name in _imports(ROOT / rel) if name.split(".")[0] in qt
    ]
    assert not offenders, offenders
    modules = [rel.removesuffix(".py").replace("/", ".") for rel in QT_FREE_UI]
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {qt!r})
        assert not loaded, loaded
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


HTTP_PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "fastapi_swagger")


def test_only_the_http_face_imports_the_http_stack_and_only_when_it_is_enabled() -> None:
    """FastAPI, pydantic and uvicorn cost start-up time and memory: controller/http/ alone imports them, and the
    app imports controller/http/ inside the function that starts it (`serve --http-port`), never at module level."""
    offenders = []
    http = ROOT / "tensorfleet_desktop" / "controller" / "http"
    for folder in ("agent", "tensorfleet_desktop"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(http):
                continue
            for name in _runtime_imports(path):
                if name.split(".")[0] in HTTP_PACKAGES:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:  # module level only: a function may import it when the port is enabled
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "tensorfleet_desktop.controller.http"
                ):
                    offenders.append(f"{path.relative_to(ROOT)} imports {node.module} at module level")
    assert not offenders, offenders
