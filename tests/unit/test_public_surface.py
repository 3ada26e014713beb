"""Every module of ``handoff`` names its public surface in ``__all__``, and no module of the
project reaches into another's private (underscore) names."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import handoff

PACKAGE_DIR = Path(handoff.__file__).resolve().parent


def project_modules() -> list[str]:
    """Dotted names of the modules that must declare ``__all__`` (no packages, no migrations)."""
    return sorted(
        info.name
        for info in pkgutil.walk_packages(handoff.__path__, "handoff.")
        if not info.ispkg and ".migrations" not in info.name
    )


MODULES = project_modules()


def imported(name: str) -> ModuleType:
    """``name`` imported with warnings silenced (Rasa's and TensorFlow's imports warn).

    ``record=True`` also keeps the warnings that libraries re-enable while they import
    (they insert ``once`` filters) out of pytest's report.
    """
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def private_imports(path: Path) -> list[str]:
    """``module:name`` for each underscore name ``path`` imports from a module of the project."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level == 0 and module.split(".")[0] != "handoff":
            continue
        found += [f"{module}:{alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


def test_the_walk_finds_the_modules() -> None:
    # Guards the parametrised tests below against passing vacuously over an empty list.
    assert "handoff.settings" in MODULES
    assert "handoff.web.app" in MODULES
    assert not [name for name in MODULES if name.endswith("__init__") or "migrations" in name]


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = imported(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    names = module.__all__
    assert isinstance(names, list | tuple)
    assert all(isinstance(item, str) for item in names)
    assert len(set(names)) == len(names), f"{name}.__all__ repeats a name"


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = imported(name)
    missing = [item for item in getattr(module, "__all__", ()) if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGE_DIR.rglob("*.py")),
    ids=lambda path: str(path.relative_to(PACKAGE_DIR.parent)),
)
def test_no_private_names_imported_across_modules(path: Path) -> None:
    assert not private_imports(path), f"{path.name} imports private names of another module"


def test_private_imports_are_detected(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "from handoff.web.agent_channel import _error, blueprint\n"
        "from .sibling import _helper\n"
        "from os.path import _joinrealpath\n"
        "from __future__ import annotations\n",
        encoding="utf-8",
    )
    assert private_imports(source) == ["handoff.web.agent_channel:_error", "sibling:_helper"]
