"""No package imports another package's private modules or names.

Each folder under ``src/inferline`` (``engine``, ``profiler``, ``ray_backend``, ...) is one
component; its modules whose names start with ``_`` are its internals, and other
components use only what it makes public (its ``__init__`` or a public module such as
``inferline.engine.batching``). The test reads every module's imports with :mod:`ast`
(module level, inside functions and under ``TYPE_CHECKING`` alike) and fails on

- ``inferline.<pkg>._x`` (or anything below it) imported from outside ``<pkg>``, and
- a ``_name`` imported from ``inferline.<pkg>`` (or one of its modules) outside ``<pkg>``.

The top-level private modules ``inferline._files`` and ``inferline._bundle`` are allowed
everywhere inside the distribution: they belong to the root package, of which every
component is a part, and exist precisely to be shared by several components (YAML/pydantic
reading, bundle loading). Making them public modules would put file-reading helpers into
the user-facing API (``import inferline as il``) for no user's benefit. Anything deeper
(``inferline.<pkg>._x``) stays private to ``<pkg>``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

_SPEC = importlib.util.find_spec("inferline")  # found, not imported: no numba to load
assert _SPEC is not None and _SPEC.submodule_search_locations
ROOT = Path(next(iter(_SPEC.submodule_search_locations)))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, is_package: bool, source: str) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every import in ``source``."""
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.extend((node.lineno, base, alias.name) for alias in node.names)
    return out


def _owner(module: str) -> str | None:
    """The component (``inferline.<pkg>``) a module belongs to; None for top-level ones."""
    parts = module.split(".")
    if parts[0] != "inferline" or len(parts) < 2 or not (ROOT / parts[1]).is_dir():
        return None
    return ".".join(parts[:2])


def violations(importer: str, is_package: bool, source: str) -> list[str]:
    """``line: imports what`` for each import of another package's private module or name."""
    found = []
    for line, target, name in _imports(importer, is_package, source):
        owner = _owner(target)
        if owner is None or _owner(importer) == owner:
            continue
        private = any(p.startswith("_") for p in target.split(".")[2:])
        if private or (name is not None and name.startswith("_")):
            found.append(
                f"{line}: imports {target}.{name}" if name else f"{line}: imports {target}"
            )
    return found


def test_no_module_imports_another_packages_private_names() -> None:
    found = [
        f"{path.relative_to(ROOT.parent)}:{problem}"
        for path in sorted(ROOT.rglob("*.py"))
        for problem in violations(_module_name(path), path.name == "__init__.py", path.read_text())
    ]
    assert not found, (
        "these modules reach into another package's internals; export what they need "
        "from that package's __init__ or a public module (docs/engine.md lists the "
        "engine's):\n" + "\n".join(found)
    )


def test_examples_and_scripts_use_only_public_names() -> None:
    """What users copy from: the examples, scripts and benchmarks of the checkout."""
    checkout = Path(__file__).resolve().parents[2]
    files = [
        p
        for folder in ("examples", "scripts", "benchmarks")
        for p in (checkout / folder).rglob("*.py")
    ]
    found = [
        f"{path.relative_to(checkout)}:{problem}"
        for path in sorted(files)
        for problem in violations("__user__", False, path.read_text())
    ]
    assert files and not found, "\n".join(found)


def test_the_check_catches_each_kind_of_crossing() -> None:
    """The walker itself: each way of crossing a seam is found, the allowed ones are not."""
    source = (
        "from inferline.engine._worker import serve\n"
        "import inferline.engine._wire\n"
        "from inferline.estimator import _kernel\n"
        "def f():\n"
        "    from inferline.engine.batching import run_batch\n"
        "    from inferline.engine import Tensor\n"
        "    from inferline._files import load_yaml_mapping\n"
        "    from inferline.profiler._errors import ProfilerError\n"
        "    from ._errors import ProfilerError as E\n"
        "    from ..engine._tensor import parse_infer_request\n"
    )
    found = violations("inferline.profiler._example", False, source)
    assert [f.split(": imports ")[1] for f in found] == [
        "inferline.engine._worker.serve",
        "inferline.engine._wire",
        "inferline.estimator._kernel",
        "inferline.engine._tensor.parse_infer_request",
    ]


def test_a_package_may_use_its_own_internals() -> None:
    own = "from inferline.engine._worker import serve\nfrom . import _wire\n"
    assert violations("inferline.engine._server", False, own) == []
    assert violations("inferline.engine", True, "from ._stage import Tensor\n") == []
    other = "from inferline.estimator._kernel import _before\n"
    assert violations("inferline.tuner._policy", False, other) != []
