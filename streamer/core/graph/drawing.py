"""A bound scoring graph as text and as graphviz source (``streamer graph show [--dot | --svg]``).

Stages come in execution order (``GraphSpec.order``), each with the stages it depends on: the edges of
``GraphSpec.edges``, so what is drawn is what runs. Pure: strings out, the CLI prints or pipes them.
"""

from __future__ import annotations

from streamer.core.graph import transforms as transforms_module
from streamer.core.graph.spec import GraphSpec
from streamer.core.graph.stages import Stage

_SHAPES = {
    "model": "box",
    "transform": "ellipse",
    "enrich": "cylinder",
    "ensemble": "hexagon",
    "cascade": "diamond",
    "rules": "octagon",
}


def describe(spec: GraphSpec) -> list[str]:
    """The graph as text, one line per stage in execution order, with the stages it reads from after ``<-``."""
    depends = spec.dependencies()
    lines = [f"graph {spec.ref}: inputs {', '.join(spec.inputs)}; output {spec.output}"]
    for name in spec.order:
        deps = sorted(depends[name])
        lines.append(f"  {name}: {what(spec.stages[name])}" + (f"  <- {', '.join(deps)}" if deps else ""))
    return lines


def to_dot(spec: GraphSpec) -> str:
    """Graphviz source of the graph: the request feeds the stages that depend on no stage."""
    depends = spec.dependencies()
    lines = [f'digraph "{spec.ref}" {{', "  rankdir=LR;", '  input [shape=plaintext, label="request"];']
    for name in spec.order:
        stage = spec.stages[name]
        label = what(stage).replace('"', "'")
        lines.append(f'  "{name}" [shape={_SHAPES[stage.kind]}, label="{name}\\n{label}"];')
    for name in spec.order:
        if not depends[name]:
            lines.append(f'  input -> "{name}";')
        lines += [f'  "{dep}" -> "{name}";' for dep in sorted(depends[name])]
    lines.append(f'  "{spec.output}" -> prediction;')
    lines.append("  prediction [shape=plaintext];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def what(stage: Stage) -> str:
    """One line on what a stage does."""
    if stage.kind == "model":
        return f"model {stage.model}"
    if stage.kind == "transform":
        return "transform -> " + ", ".join(transforms_module.outputs_of(stage.ops))
    if stage.kind == "enrich":
        features = ", ".join(n for n, _ in stage.defaults)
        return f"enrich {stage.entity} by {stage.key} -> {features} (on failure: {stage.on_failure})"
    if stage.kind == "ensemble":
        return f"ensemble {stage.method} of {', '.join(stage.members)}" + (f" by {stage.model}" if stage.model else "")
    if stage.kind == "cascade":
        return f"cascade {stage.first} -> {stage.then} when {stage.low} <= score <= {stage.high}"
    assert stage.rules is not None
    return f"rules ({stage.rules.mode}, {len(stage.rules.rules)} rules, default {stage.rules.default})"
