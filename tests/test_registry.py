"""The registry of steps: each parameter and default is declared once and every face shows the same.

The CLI's options, job validation and ``/kinds`` (from which the panel builds its option forms) all
come from the step declarations; these tests hold them together, and hold the package's shape (no
import circle, no module too large to read).
"""
import ast
import json
from pathlib import Path

import pytest

from nipgboard_plugin import cli, steps
from nipgboard_plugin.errors import InvalidParameter, NotFound
from nipgboard_plugin.params import REQUIRED, Param

PACKAGE = Path(steps.__file__).resolve().parent.parent
NET = "efficientnet_lite0"
EXAMPLE = {"network": NET, "networks": [NET], "images": "/tmp", "out": "/tmp/x.csv", "id": 1}
ONE_OF = {"similar": {"id": 1}}    # one of several parameters is required


def _parsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def _cli_argv(step):
    """The shortest command line for ``step``: its required parameters only."""
    argv = [step.command, "LOGDIR"]
    for p in step.params:
        if p.cli and p.required:
            value = EXAMPLE[p.name]
            argv += [p.cli_flags()[0]] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    for name, value in ONE_OF.get(step.name, {}).items():
        argv += [step.param(name).cli_flags()[0], str(value)]
    return argv


@pytest.mark.parametrize("name", list(steps.all_steps()))
def test_cli_jobs_and_kinds_show_the_same_parameters_and_defaults(name):
    step = steps.get(name)
    described = {d["name"]: d for d in step.describe()["params"]}
    # /kinds (the panel's forms) lists every parameter the web may give, with its declared default.
    assert list(described) == [p.name for p in step.params if p.web]
    for p in step.params:
        if p.web:
            assert described[p.name]["default"] == (None if p.required else p.default)
            assert described[p.name]["required"] == p.required
            assert (described[p.name]["min"], described[p.name]["max"]) == (p.low, p.high)
    # A job given only the required parameters gets exactly the declared defaults.
    required = dict({p.name: EXAMPLE[p.name] for p in step.params if p.required}, **ONE_OF.get(name, {}))
    job = step.clean(required, face="web") if step.name != "ingest" else {
        p.name: p.clean(required.get(p.name)) for p in step.params}
    for p in step.params:
        if p.web and not p.required and p.name not in ONE_OF.get(name, {}):
            assert job[p.name] == p.default, p.name
    if not step.cli:
        assert step.command not in _parsers()
        return
    # The CLI parses its options into the same names and, with nothing given, the same defaults.
    parser = _parsers()[step.command]
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "json", "logdir")}
    assert dests == {p.name for p in step.params if p.cli}
    args = cli.build_parser().parse_args(_cli_argv(step))
    given = {p.name: getattr(args, p.name) for p in step.params if p.cli}
    from_cli = {p.name: p.clean(given[p.name]) for p in step.params if p.cli}
    for p in step.params:
        if p.cli and p.web and not p.required:
            assert from_cli[p.name] == job[p.name], p.name


def test_one_umap_option_one_declaration():
    """`search`'s grid axes are `project`'s own UMAP options, as lists: ranges and choices are shared."""
    project, search = steps.get("project"), steps.get("search")
    from nipgboard_plugin.steps.project import UMAP_OPTIONS

    for option in UMAP_OPTIONS:
        assert project.param(option.name) is option
        axis = search.param(option.name)
        assert axis.type == option.type + "_list" and (axis.low, axis.high, axis.choices) == \
            (option.low, option.high, option.choices)
    with pytest.raises(InvalidParameter, match="n_neighbors.*between 2 and 200"):
        search.clean({"network": NET, "n_neighbors": [10, 500]})


def test_parameters_are_checked_alike_from_text_and_json():
    step = steps.get("cluster")
    from_query = step.clean({"network": NET, "resolution": "0.5", "k": "20", "projector": "false"})
    from_json = step.clean({"network": NET, "resolution": 0.5, "k": 20, "projector": False})
    assert from_query == from_json and from_json["resolution"] == 0.5 and from_json["projector"] is False
    for bad, message in (({"k": "1"}, "between 2 and 200"), ({"k": "ten"}, "must be an integer"),
                         ({"k": True}, "must be an integer"), ({"resolution": "nan"}, "finite"),
                         ({"graph": "ring"}, "one of: mst, knn"), ({"colour": 1}, "unknown parameter 'colour'"),
                         ({"k": 99999999999999999999999}, "between 2 and 200")):
        with pytest.raises(InvalidParameter, match=message):
            step.clean(dict({"network": NET}, **bad))
    with pytest.raises(InvalidParameter, match="'network' is required"):
        step.clean({})
    with pytest.raises(NotFound, match="unknown network 'nope'"):
        step.clean({"network": "nope"})


def test_a_parameter_with_a_lone_surrogate_or_nul_is_refused():
    p = Param("positive", "str", None)
    for bad in ("\ud800", "a\x00b"):
        with pytest.raises(InvalidParameter, match="not allowed"):
            p.clean(bad)


def test_the_web_cannot_give_parameters_declared_for_the_shell_only():
    """`out` (a path on the server) and `workers` exist on the command line, not over HTTP."""
    with pytest.raises(InvalidParameter, match="unknown parameter 'out'"):
        steps.get("export").clean({"out": "/etc/passwd"}, face="web")
    assert "out" not in [d["name"] for d in steps.get("export").describe()["params"]]
    assert steps.get("export").clean({"out": "x.csv"}, face="cli")["out"] == "x.csv"


def test_the_pipeline_checks_each_steps_options_with_that_steps_declarations():
    pipeline = steps.get("pipeline")
    p = pipeline.clean({"network": NET, "options": {"project": {"n_neighbors": "30"}}})
    assert p["steps"] == ["embed", "project", "cluster", "predict"]
    assert p["options"]["project"]["n_neighbors"] == 30 and p["options"]["project"]["min_dist"] == 0.1
    with pytest.raises(InvalidParameter, match="n_neighbors"):
        pipeline.clean({"network": NET, "options": {"project": {"n_neighbors": 1}}})
    with pytest.raises(InvalidParameter, match="not one of the steps"):
        pipeline.clean({"network": NET, "steps": ["embed"], "options": {"cluster": {}}})
    with pytest.raises(InvalidParameter, match="in the order"):
        pipeline.clean({"network": NET, "steps": ["project", "embed"]})
    # The panel's "Auto": the grid search, applied, then the predictions.
    auto = pipeline.clean({"network": NET, "steps": ["search", "predict"], "options": {"search": {"apply": True}}})
    assert auto["options"]["search"]["apply"] is True and auto["options"]["search"]["folds"] == 3


def test_kinds_lists_every_job_step_as_json():
    kinds = [s.describe() for s in steps.job_steps().values()]
    names = [k["kind"] for k in kinds]
    assert {"ingest", "embed", "project", "cluster", "predict", "search", "disagreements", "duplicates", "rare",
            "export", "projector", "sprites", "evaluate", "pipeline"} <= set(names)
    assert "similar" not in names  # answered at once by its route, never queued
    json.dumps(kinds)  # JSON-able as served
    project = next(k for k in kinds if k["kind"] == "project")
    assert project["needs"] == ["embed"] and project["produces"] == ["projection"]
    n_neighbors = next(p for p in project["params"] if p["name"] == "n_neighbors")
    assert n_neighbors == {"name": "n_neighbors", "type": "int", "default": 15, "required": False, "min": 2,
                           "max": 200, "choices": None, "help": n_neighbors["help"]} and n_neighbors["help"]


# -- the package's shape ----------------------------------------------------------------------------------
def _module_imports():
    """{module: set of package modules it imports at import time (not inside functions)}."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:   # top level only: lazy imports break no circle
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("nipgboard_plugin"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_circle():
    graph = _module_imports()
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import circle: " + " -> ".join(trail + [module])
        state[module] = "open"
        for dep in sorted(graph[module]):
            if not module.startswith(dep + "."):   # a module may use its own package's __init__
                visit(dep, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_worker_never_imports_the_web_layer():
    graph = _module_imports()
    seen, todo = set(), ["nipgboard_plugin.jobs.worker"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    assert not {"nipgboard_plugin.web", "nipgboard_plugin.plugin"} & seen


def test_no_module_over_500_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 500} == {}


def test_required_marker_is_never_a_default_shown_to_anyone():
    for step in steps.all_steps().values():
        for d in step.describe()["params"]:
            assert d["default"] is not REQUIRED
