"""Small ONNX graph utilities: the PyTorch module behind a node, constant-weight MatMuls, and the exporter's
build-host metadata taken out of a finished graph."""

from __future__ import annotations

import ast


def module_path(node) -> str:
    """The PyTorch module a node came from: dynamo exports keep it in 'pkg.torch.onnx.name_scopes'."""
    md = {p.key: p.value for p in node.metadata_props}
    scopes = md.get("pkg.torch.onnx.name_scopes")
    if scopes:
        path = ""
        for sc in ast.literal_eval(scopes):
            if path == "" or sc.startswith(path + "."):
                path = sc  # keep the module hierarchy, drop trailing call names
        return path
    return node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")


def weight_matmuls(model) -> list:
    """MatMul nodes whose B is a constant 2-D initializer (the Linear layers)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def nodes_of_modules(model, modules: list[str]) -> dict[str, str]:
    """node name -> module, for the MatMul/Gemm nodes that implement the given Linear modules."""
    wanted = set(modules)
    inits = {i.name for i in model.graph.initializer}
    return {n.name: module_path(n) for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
            and module_path(n) in wanted}


def strip_build_metadata(model) -> int:
    """Take out what the exporter records about the build host (in `metadata_props` and doc strings of the
    graph, its nodes, values, initializers and functions, subgraphs included): stack traces with the build
    host's absolute paths, FX node dumps, rewriter rule names. The file then holds only the model, and the
    same recipe gives the same bytes wherever it is built. Returns the entries removed (in place)."""
    removed = 0

    def clear(msg) -> None:
        nonlocal removed
        if hasattr(msg, "metadata_props"):
            removed += len(msg.metadata_props)
            del msg.metadata_props[:]
        if hasattr(msg, "doc_string"):
            msg.doc_string = ""

    def graph(g) -> None:
        clear(g)
        for v in (*g.input, *g.output, *g.value_info, *g.initializer, *g.sparse_initializer):
            clear(v)
        for n in g.node:
            nodes(n)

    def nodes(n) -> None:
        clear(n)
        for a in n.attribute:
            if a.HasField("g"):
                graph(a.g)
            for sub in a.graphs:
                graph(sub)

    graph(model.graph)
    for f in model.functions:
        clear(f)
        for n in f.node:
            nodes(n)
    model.doc_string = ""
    return removed


def strip_file(path) -> int:
    """strip_build_metadata on a self-contained .onnx file, rewritten in place when anything was removed."""
    import os

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    removed = strip_build_metadata(model)
    if removed:
        tmp = f"{path}.strip.tmp"
        onnx.save(model, tmp)
        os.replace(tmp, path)
    return removed
