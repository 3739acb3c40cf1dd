"""The layering ARCHITECTURE.md promises, read from the imports themselves."""

import ast
from pathlib import Path

import mssl_core

PACKAGE = Path(mssl_core.__file__).parent
# each layer may import itself and the layers before it
LAYERS = ["engine", "labeling", "project", "integrations", "benchmarks"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers_import_only_downward():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        allowed = {f"mssl_core.{name}" for name in LAYERS[: rank + 1]}
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                if name.startswith("mssl_core.") and ".".join(name.split(".")[:2]) not in allowed:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_engine_package_never_imports_streamlit():
    users = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "streamlit" for name in _imports(path))
    ]
    assert users == []


def test_pages_import_no_torch():
    """Pages call the core; tensors stay in it."""
    views = PACKAGE.parent / "views"
    pages = [p.name for p in views.glob("*.py") if any(n.split(".")[0] == "torch" for n in _imports(p))]
    assert pages == []
