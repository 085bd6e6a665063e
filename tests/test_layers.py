"""The package's layers: no import runs from a lower layer up to a higher one, and no module
imports itself around a circle.

Every `import` statement counts, at module level or inside a function (a lazy import is still a
dependency; it only hides a loop until the function runs), including `if TYPE_CHECKING:` blocks.
The imports are read with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import llm4pr

PACKAGE_DIR = Path(llm4pr.__file__).parent
ROOT = "__init__"  # the package's own __init__ (its version)

# Lowest first. A module may import its own top-level package's modules and anything in a lower
# layer. Names within one layer are independent: neither may import the other.
LAYERS: list[tuple[str, ...]] = [
    # The package root, atomic file writing (llm4pr/io.py) and the provenance record of every
    # result file (llm4pr/provenance.py: commit, machine, library versions): they import nothing from llm4pr.
    (ROOT, "io", "provenance"),
    # The request format, the feature schema, JSON-lines reading, the dataset converters.
    ("data",),
    # Pure scoring (metrics, run checking) and the Ranker interface (with the inference modes and
    # the saved ranker's manifest). Both need only the request format, and much above needs them:
    # training orders examples by nDCG and validates with evaluate_run, the baselines and the
    # benchmark score runs, and every ranker (the LLM's and the baselines) implements
    # `rankers.base.Ranker`. Commands that load a checkpoint to score it
    # (`llm4pr evaluate`, `evaluate-adaptation`) are not pure scoring; they live in inference.
    ("evaluation", "rankers"),
    # Field encoders and text encoders.
    ("features",),
    # The LLM4PR model, its checkpoint format (model.checkpoint) and the run folder's layout
    # (model.run_folder): everything that reads or writes a checkpoint sits at or above here.
    ("model",),
    # The two families of Ranker: the LLM ranker (with the commands that load a checkpoint to rank,
    # score or read back features) and the baselines, which need no LLM. Neither uses the other.
    ("inference", "baselines"),
    # Training validates the model it trains by ranking with it, so it sits above inference;
    # `load_ranker` (llm4pr/loading.py) reads back either family's saved form, so it sits above both.
    ("training", "loading"),
    # What puts the pieces together: the benchmark (trains and ranks every row), the service, and
    # `llm4pr demo` (prepare, train, rank, score in one run). None of them uses another.
    ("benchmarks", "serving", "demo"),
    # The command line, and `python -m llm4pr` on top of it.
    ("cli",),
    ("__main__",),
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's __init__)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph() -> dict[str, set[tuple[str, int]]]:
    """Module -> the llm4pr modules it imports, each with the line of the import statement."""
    modules = module_files()

    def known(name: str) -> str:  # the module a dotted name lies in ("llm4pr.data.jsonl.write_json" -> "llm4pr.data.jsonl")
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[tuple[str, int]]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "llm4pr" or target.startswith("llm4pr."):
                    graph[name].add((known(target), node.lineno))
    return graph


def component(module: str) -> str:
    """The top-level name a module belongs to: "llm4pr.data.jsonl" -> "data", "llm4pr" -> ROOT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def layer_violations(graph: dict[str, set[tuple[str, int]]]) -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        for target, line in sorted(imports):
            source, imported = component(module), component(target)
            if source != imported and LEVEL[imported] >= LEVEL[source]:
                where = "the same layer as" if LEVEL[imported] == LEVEL[source] else "a higher layer than"
                problems.append(f"{module} (line {line}) imports {target}: '{imported}' is in {where} '{source}'")
    return problems


def import_cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """One shortest circle through each module that is on one, each circle reported once."""
    successors = {module: sorted({target for target, _ in imports}) for module, imports in graph.items()}
    cycles, seen = [], set()
    for start in sorted(successors):
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue and start not in parent:
            module = queue.popleft()
            for target in successors[module]:
                if target not in parent:
                    parent[target] = module
                    queue.append(target)
        if start in parent:
            cycle = [start]
            while parent[cycle[-1]] != start:
                cycle.append(parent[cycle[-1]])
            cycle = [start, *reversed(cycle[1:]), start]
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                cycles.append(cycle)
    return cycles


def test_every_top_level_name_has_a_layer() -> None:
    names = {component(module) for module in module_files()}
    assert names - LEVEL.keys() == set(), "place new packages and modules in LAYERS"
    assert LEVEL.keys() - names == set(), "LAYERS names something that no longer exists"


def test_imports_only_run_down_the_layers() -> None:
    problems = layer_violations(import_graph())
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    cycles = [" -> ".join(cycle) for cycle in import_cycles(import_graph())]
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_function_level_imports_and_catch_both_faults() -> None:
    graph = import_graph()
    # `llm4pr train` imports the trainer inside its function, `from llm4pr.training.trainer import Trainer`.
    assert "llm4pr.training.trainer" in {target for target, _ in graph["llm4pr.cli"]}
    assert "llm4pr.data.requests" in {target for target, _ in graph["llm4pr.rankers.base"]}
    upward = {**graph, "llm4pr.data.schema": graph["llm4pr.data.schema"] | {("llm4pr.model.checkpoint", 1)}}
    assert layer_violations(upward) == [
        "llm4pr.data.schema (line 1) imports llm4pr.model.checkpoint: 'model' is in a higher layer than 'data'"
    ]
    sideways = {**graph, "llm4pr.serving.app": graph["llm4pr.serving.app"] | {("llm4pr.demo", 1)}}
    assert layer_violations(sideways) == ["llm4pr.serving.app (line 1) imports llm4pr.demo: 'demo' is in the same layer as 'serving'"]
    circle = {**graph, "llm4pr.data.schema": graph["llm4pr.data.schema"] | {("llm4pr.data.jsonl", 1)}}
    assert ["llm4pr.data.jsonl", "llm4pr.data.schema", "llm4pr.data.jsonl"] in import_cycles(circle)
