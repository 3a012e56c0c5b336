"""Small ONNX graph utilities: the PyTorch module behind a node, constant-weight MatMuls."""

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
