"""The import graph of the installed package, read statically (every `import` / `from` at any depth, inside
functions and `if TYPE_CHECKING:` blocks too), against the layering rules: a lower layer never imports a higher
one, and code that serves every pipeline never imports an embedded model. A failure names the offending edge.

Layers, bottom up (a module may import its own layer and those below):
  0 foundation  cachepilot.core, errors, finite, records, devices, seeds, step_counts, searched, checkpoints (data)
  1 runtime     cachepilot.runtime
  2 models      cachepilot.policies, cachepilot.predictors
  3 product     conditions, driver, quality, images, outputs, diffusers_loading, loading, cache_checkpoint, api,
                compile, the
                `cachepilot` package itself, and cachepilot.embedded.base (the embedded models' interface + registry)
  4 envs        cachepilot.envs
  5 tools       cachepilot.train, cachepilot.bench, and the embedded models (cachepilot.embedded.<model>)
  6 cli         cachepilot.cli
Besides the ranks: cachepilot.core and cachepilot.errors import nothing of cachepilot but errors and core; no
generic module (everything outside cachepilot.embedded and the CLI) imports an embedded model except through
cachepilot.embedded.base, and an embedded model never imports another one.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

FOUNDATION = ("cachepilot.core", "cachepilot.errors", "cachepilot.finite", "cachepilot.records", "cachepilot.devices",
              "cachepilot.seeds", "cachepilot.step_counts", "cachepilot.searched", "cachepilot.checkpoints")
PRODUCT = ("cachepilot.conditions", "cachepilot.driver", "cachepilot.quality", "cachepilot.images",
           "cachepilot.outputs", "cachepilot.diffusers_loading", "cachepilot.loading", "cachepilot.cache_checkpoint",
           "cachepilot.api", "cachepilot.compile", "cachepilot.embedded.base", "cachepilot.embedded")
LAYERS = [(0, FOUNDATION), (1, ("cachepilot.runtime",)), (2, ("cachepilot.policies", "cachepilot.predictors")),
          (3, PRODUCT), (4, ("cachepilot.envs",)), (5, ("cachepilot.train", "cachepilot.bench", "cachepilot.embedded.")),
          (6, ("cachepilot.cli",))]
PACKAGES = ("cachepilot", "cachepilot.core", "cachepilot.embedded", "cachepilot.bench", "cachepilot.checkpoints",
            "cachepilot.envs", "cachepilot.policies", "cachepilot.predictors", "cachepilot.runtime", "cachepilot.train")


def _matches(module: str, prefix: str) -> bool:
    """`prefix` names the module or a package above it; a prefix ending in "." names only what is below it."""
    if prefix.endswith("."):
        return module.startswith(prefix)
    return module == prefix or module.startswith(prefix + ".")


def rank(module: str) -> int | None:
    """The layer of a cachepilot module (the most specific prefix wins); None for the package root alone."""
    best = None
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if _matches(module, prefix) and (best is None or len(prefix) > best[1]):
                best = (layer, len(prefix))
    if best is None and module == "cachepilot":
        return 3
    return None if best is None else best[0]


def installed_modules() -> dict[str, Path]:
    """module name -> source file, for every module of the installed package (its package-dir mapping)."""
    found = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in root.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
        for sub in root.iterdir():  # nested packages not listed above (cli/, embedded/<model>/...)
            if sub.is_dir() and (sub / "__init__.py").is_file() and f"{package}.{sub.name}" not in PACKAGES:
                for path in sub.rglob("*.py"):
                    parts = path.relative_to(root).with_suffix("").parts
                    parts = parts[:-1] if parts[-1] == "__init__" else parts
                    found[".".join((package, *parts))] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Every cachepilot module `module` imports, at any depth of its source."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {name for name in names if name == "cachepilot" or name.startswith("cachepilot.")}
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = installed_modules()
    edges = {}
    for module, path in modules.items():
        # `from cachepilot.x import name` names a module only when x.name is one
        edges[module] = {target for target in imports_of(module, path)
                         if target in modules or target.rpartition(".")[0] not in modules}
    return edges


def _offending(graph, allowed) -> list[str]:
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if not allowed(source, target))


def test_the_graph_covers_the_installed_package(graph):
    assert {"cachepilot.api", "cachepilot.runtime.engine", "cachepilot.envs.caching_env", "cachepilot.bench.methods",
            "cachepilot.embedded.digits.pipeline", "cachepilot.checkpoints"} <= set(graph)
    assert "cachepilot.policies.prior" in graph["cachepilot.cache_checkpoint"] or any(
        t.startswith("cachepilot.policies") for t in graph["cachepilot.cache_checkpoint"])
    assert all(rank(module) is not None for module in graph), [m for m in graph if rank(m) is None]


def core_rule(source: str, target: str) -> bool:
    if not (_matches(source, "cachepilot.core") or source == "cachepilot.errors"):
        return True
    return target == "cachepilot.errors" or _matches(target, "cachepilot.core")


def rank_rule(source: str, target: str) -> bool:
    target_rank = rank(target)
    return target_rank is None or target_rank <= rank(source)


def _model_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else None


def embedded_rule(source: str, target: str) -> bool:
    if not _matches(target, "cachepilot.embedded") or target in ("cachepilot.embedded", "cachepilot.embedded.base"):
        return True
    if _matches(source, "cachepilot.embedded"):  # within one model: its own modules (and the interface)
        return _model_of(source) == _model_of(target)
    return _matches(source, "cachepilot.cli")


_TOOLS = ("cachepilot.cli",)
FORBIDDEN = {"cachepilot.policies": ("cachepilot.envs", "cachepilot.train", "cachepilot.bench", *_TOOLS,
                                     "cachepilot.embedded"),
             "cachepilot.predictors": ("cachepilot.envs", "cachepilot.train", "cachepilot.bench", *_TOOLS,
                                       "cachepilot.embedded"),
             "cachepilot.envs": ("cachepilot.train", "cachepilot.bench", *_TOOLS),
             "cachepilot.train": _TOOLS, "cachepilot.bench": _TOOLS}


def forbidden_rule(source: str, target: str) -> bool:
    return not any(_matches(source, low) and any(_matches(target, high) for high in highs)
                   for low, highs in FORBIDDEN.items())


RULES = {
    "core / errors import other cachepilot modules": core_rule,
    "imports that go up a layer": rank_rule,
    "generic code importing an embedded model (ask cachepilot.embedded.base)": embedded_rule,
    "forbidden imports (models, envs and tools stay below their users)": forbidden_rule,
}


@pytest.mark.parametrize("what", list(RULES))
def test_the_installed_package_follows_the_rule(graph, what):
    bad = _offending(graph, RULES[what])
    assert not bad, f"{what}:\n" + "\n".join(bad)


def test_the_rules_fail_on_the_edges_they_forbid(tmp_path):
    """Each rule rejects a bad edge (so a passing run means something), and the reader sees imports inside
    functions and relative ones."""
    bad = {"cachepilot.core.policy": {"cachepilot.runtime.engine"},
           "cachepilot.runtime.engine": {"cachepilot.policies.learned"},
           "cachepilot.envs.caching_env": {"cachepilot.embedded.digits.loading", "cachepilot.train.policy"},
           "cachepilot.predictors.spec": {"cachepilot.bench.methods"}}
    assert _offending(bad, core_rule) == ["cachepilot.core.policy -> cachepilot.runtime.engine"]
    assert "cachepilot.runtime.engine -> cachepilot.policies.learned" in _offending(bad, rank_rule)
    assert _offending(bad, embedded_rule) == ["cachepilot.envs.caching_env -> cachepilot.embedded.digits.loading"]
    assert _offending(bad, forbidden_rule) == ["cachepilot.envs.caching_env -> cachepilot.train.policy",
                                               "cachepilot.predictors.spec -> cachepilot.bench.methods"]
    assert embedded_rule("cachepilot.loading", "cachepilot.embedded.base")
    assert not embedded_rule("cachepilot.train.fit", "cachepilot.embedded.digits.data")  # no generic exemptions
    assert embedded_rule("cachepilot.embedded.digits.train_backbone", "cachepilot.embedded.digits.data")
    assert not embedded_rule("cachepilot.embedded.scenes.model", "cachepilot.embedded.digits.pipeline")
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from ..embedded.digits import loading\n    import cachepilot.cli.common\n")
    assert imports_of("cachepilot.envs.mod", path) >= {"cachepilot.embedded.digits", "cachepilot.cli.common"}
