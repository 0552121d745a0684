"""Drop ops whose outputs nobody reads (left behind by the folding passes)."""


def prune(graph):
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        live = set(g.outputs) | {i for op in g.ops for i in op.inputs}
        kept = [op for op in g.ops if any(o in live for o in op.outputs)]
        changed = len(kept) != len(g.ops)
        g.ops = kept
    return g
