"""Imports point down the layers: read every module of `services/remsguard` (AST, nothing is
imported) and hold its `remsguard.*` imports to the layer order below.

- `domain/` imports the standard library and `remsguard.domain` only.
- A module may import its own layer and the layers under it, never one above. Imports inside
  a function (lazy, per command) count the same as module-level ones.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "remsguard"

# Lowest first. A name is a top-level module or folder of the package; a longer dotted name
# (`embedded.container`) places one module away from its folder.
# `__init__` is the package itself (its `__version__`).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"domain", "__init__"}),
    frozenset({"contract", "protocols", "simulation", "config", "identity"}),
    frozenset({"monitoring", "handlers"}),
    frozenset({"adapters"}),
    frozenset({"client", "alerting", "auditing", "embedded", "hl7v2", "fhir", "doors"}),
    # `embedded.container` builds the whole embedded process (journal, runtime, alerting,
    # doors, the HL7 listener): it is that process's wiring, imported only by entry points.
    frozenset({"bootstrap", "embedded.container", "entrypoints", "__main__"}),
)

# Upward imports that exist and are not fixed yet: (importer, imported) as dotted names under
# `remsguard`, each with who fixes it. None today; remove a line when its import is gone (the
# test says so).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)  # the root: `__init__`
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _layer(name: str) -> int:
    """The layer of a dotted module name: its longest prefix named in `LAYERS`."""
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        for level, names in enumerate(LAYERS):
            if prefix in names:
                return level
    raise AssertionError(f"remsguard.{name} is in no layer: add its folder to LAYERS")


def _is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(`remsguard`-relative module or top-level name, line) of every absolute import; and
    third-party/stdlib ones as (`:name`, line)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "remsguard":  # a submodule, or a name of the package itself
                names = [
                    f"remsguard.{a.name}" if _is_module(a.name) else "remsguard.__init__"
                    for a in node.names
                ]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}:{node.lineno}: relative import; import absolutely")
        else:
            continue
        for name in names:
            if name == "remsguard" or name.startswith("remsguard."):
                found.append((name.removeprefix("remsguard").lstrip("."), node.lineno))
            else:
                found.append((":" + name, node.lineno))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_domain_imports_only_the_standard_library() -> None:
    stdlib = sys.stdlib_module_names | {"__future__"}
    wrong = []
    for path in _modules():
        if _module_name(path).split(".")[0] != "domain":
            continue
        for name, line in _imports(path):
            if name.startswith(":"):
                if name[1:].split(".")[0] not in stdlib:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {name[1:]}")
            elif name.split(".")[0] != "domain":
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports remsguard.{name}")
    assert not wrong, "domain/ must import only the standard library:\n" + "\n".join(wrong)


def _upward() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> where, for every import of a higher layer."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in _modules():
        importer = _module_name(path)
        low = _layer(importer)
        for name, line in _imports(path):
            if name.startswith(":") or not name or _layer(name) <= low:
                continue
            key = _known_key(importer, name)
            found.setdefault(key, []).append(f"{path.relative_to(PACKAGE)}:{line}")
    return found


def _known_key(importer: str, imported: str) -> tuple[str, str]:
    """The `KNOWN_UPWARD` entry an import matches (its longest prefixes), else itself."""
    for known_importer, known_imported in KNOWN_UPWARD:
        if (importer == known_importer or importer.startswith(known_importer + ".")) and (
            imported == known_imported or imported.startswith(known_imported + ".")
        ):
            return known_importer, known_imported
    return importer, imported


def test_no_layer_imports_a_higher_one() -> None:
    upward = _upward()
    new = {key: where for key, where in upward.items() if key not in KNOWN_UPWARD}
    assert not new, "imports that run up the layers:\n" + "\n".join(
        f"{a} -> {b} ({', '.join(where)})" for (a, b), where in sorted(new.items())
    )


def test_known_upward_imports_still_exist() -> None:
    """An exception whose import is gone must leave the list, so it cannot come back."""
    gone = sorted(set(KNOWN_UPWARD) - set(_upward()))
    assert not gone, f"fixed, remove from KNOWN_UPWARD: {gone}"


def test_every_folder_has_a_layer() -> None:
    for path in _modules():
        _layer(_module_name(path))
