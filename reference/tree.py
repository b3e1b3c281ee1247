"""Parameter trees: nested dicts and lists of arrays, and the flat ``{"blocks.0.attn.Wq": array}`` view of them.

Every model keeps its parameters (and its gradients, with the same structure) as such a tree. Optimizers,
checkpoints, pruning and quantization walk the flat view, so they work for every model alike.
"""


def flatten(tree):
    """Nested params (or grads) -> ``{"blocks.0.attn.Wq": array, ...}``, in a fixed order (the order of ``tree``)."""
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}{key}.")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{prefix}{i}.")
        else:
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


def unflatten(flat):
    """Inverse of :func:`flatten`: dotted names -> nested dicts, with integer keys turned into list positions."""
    tree = {}
    for name, value in flat.items():
        node = tree
        *path, leaf = name.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value

    def listify(node):
        if not isinstance(node, dict):
            return node
        if node and all(k.isdigit() for k in node):
            return [listify(node[str(i)]) for i in range(len(node))]
        return {k: listify(v) for k, v in node.items()}

    return listify(tree)
