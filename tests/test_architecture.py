"""The import direction between Parley's packages (an AST scan; nothing is imported).

    voice           the product on top: server, engines, client, Realtime API, benchmarks and
                    the `parley` command (voice/cli, also `python -m voice`): may use everything
    distill         traces, tokens, direct-model training: builds on model, codec
    model, codec    models (speech model, Llama, the bundled VAD/ASR/TTS/LLM components) and the
                    codec: they use each other only through leaf modules
    model.common    the ground floor, leaf modules only: errors, cache, audio constants, paths

A *leaf* module imports nothing of the project; any package may use any leaf module (all of
`model/common/`, also e.g. `model.layout`). Every import counts: module level, inside functions,
`importlib.import_module("...")` and `__import__("...")`.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("voice", "codec", "model", "distill")  # the fixed top level: nothing else holds code
RANK = {"codec": 0, "model": 0, "distill": 1, "voice": 2}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module a dotted import name refers to (`codec.io.load_codec` -> `codec.io`)."""
    mods = _modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@cache
def _imports(module: str) -> tuple[tuple[str, int], ...]:
    """(imported project module, line) for every import in `module`, at any depth."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names += [(f"{base}.{a.name}", node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names.append((node.args[0].value, node.lineno))
    out = {(m, line) for n, line in names if n.split(".")[0] in PACKAGES and (m := _resolve(n)) and m != module}
    return tuple(sorted(out))


def _is_leaf(module: str) -> bool:
    return not _imports(module)


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_packages_import_only_downwards() -> None:
    bad = []
    for mod in _modules():
        for dep, line in _imports(mod):
            a, b = _layer(mod), _layer(dep)
            if a == b or _is_leaf(dep):
                continue
            if b not in RANK or RANK[a] <= RANK[b]:
                bad.append(f"{_modules()[mod].relative_to(ROOT)}:{line}: {mod} -> {dep} ({a} may not use {b})")
    assert not bad, "imports against the package direction:\n" + "\n".join(bad)


def test_common_holds_only_leaf_modules() -> None:
    """`model.common` is the ground floor: what every package may use, so it may use nothing."""
    tied = {m: [d for d, _ in _imports(m)] for m in _modules()
            if m.startswith("model.common") and not _is_leaf(m)}
    assert not tied, f"model/common/ modules must import nothing of the project: {tied}"


def test_scan_sees_function_level_and_dynamic_imports() -> None:
    """The scan itself: a lazy import inside a function and importlib strings are edges."""
    assert any(dep.startswith("model.") for dep, _ in _imports("voice.cli.components"))  # all inside handlers
    assert any(dep == "codec.train" for dep, _ in _imports("voice.cli.codec"))  # __import__("codec.train")


def test_voice_product_code_does_not_use_benchmarks() -> None:
    """The benchmarks reuse the product (client, server, engines, components), never the reverse."""
    product = ("voice.client", "voice.server", "voice.engines", "voice.realtime", "model.components")
    bad = [f"{m} -> {d}" for m in _modules() if m.startswith(product)
           for d, _ in _imports(m) if d.startswith("voice.bench")]
    assert not bad, bad


def test_no_file_over_400_lines() -> None:
    kinds = ("*.py", "*.js", "*.html", "*.css", "*.sh", "*.md")
    files = [p for d in (*PACKAGES, "tests", "demos") for k in kinds for p in (ROOT / d).rglob(k)]
    files += [ROOT / "README.md", ROOT / "pyproject.toml"]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these files (400 lines at most): {long}"


def test_top_readme_is_a_front_door() -> None:
    """The top README stays short (what Parley is, the two commands, status, links); details live
    in the folder READMEs, one per package."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    missing = [pkg for pkg in PACKAGES if not (ROOT / pkg / "README.md").is_file()]
    assert not missing, f"packages without a README.md: {missing}"


def test_fixed_top_level() -> None:
    """The repository's top level is fixed: the four packages, tests, demos, weights, and the
    project files; code never grows a fifth top-level package."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        return  # not a git checkout (e.g. an unpacked copy): nothing to check
    top = {p.split("/")[0] for p in tracked}
    allowed = {*PACKAGES, "tests", "demos", "weights", "pyproject.toml", "README.md", ".ci", ".gitignore"}
    assert top <= allowed, f"unexpected top-level entries: {sorted(top - allowed)}"
