"""What ``invo-convert --target`` means for a file: the involution form it is built with, and the audit of its
operator count against the target's bounds.  No TensorFlow.

A GPU runs each operator as at least one dispatch, and on the one GPU measured every dispatch cost about
3 us whatever it computed (docs/gpu_cost_model.md); the GPU target therefore counts operators
(docs/gpu_cost_model.md).  One CPU thread rewards the opposite trade, so the CPU target keeps the shift form.
"""

import re

from involution.catalog import STRATEGIES, TARGET_STRATEGIES

TARGETS = tuple(TARGET_STRATEGIES)
# The most operators one involution layer of a GPU file may have: the separable form is 8-12 (a stride-2 layer
# adds its pool and one PAD); the CPU target's K=7 layer is 200-400.
GPU_MAX_LAYER_OPS = 20
# Per-dispatch cost on the one GPU measured, fitted to its record (docs/gpu_cost_model.md), used only to put an
# operator count in milliseconds.
GPU_DISPATCH_US = 3.0


def aggregation_for(target, aggregation=None):
    """The Involution ``strategy`` a conversion builds: ``aggregation`` if given, else the target's."""
    if target not in TARGET_STRATEGIES:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}; got {target!r}")
    if aggregation is not None and aggregation not in STRATEGIES:
        raise ValueError(f"--aggregation must be one of {', '.join(STRATEGIES)}; got {aggregation!r}")
    return aggregation or TARGET_STRATEGIES[target]


def layer_op_counts(sg, layer_names):
    """{layer name: operators whose outputs are named inside that layer's scope}, from a subgraph as
    ``TFLiteModel`` reads it.  The converter names an op's output after the TF ops it came from
    (``model/LAYER/windows/mul``; a fused op joins several with ``;``), so each op counts once, for the first
    layer named in its output."""
    if not layer_names:
        return {}
    inside = re.compile(r"(?:^|/)(" + "|".join(map(re.escape, sorted(layer_names, key=len, reverse=True)))
                        + r")(?:_\d+)?/")
    counts = dict.fromkeys(layer_names, 0)
    for _, outs in sg["op_io"]:
        for o in outs:
            found = inside.search(sg["tensors"][o].name or "") if o >= 0 else None
            if found:
                counts[found.group(1)] += 1
                break
    return counts


def target_audit(target, ops, layer_ops):
    """{target, ops, dispatch_ms, layer_ops, max_layer_ops, warnings}: the file's operators judged against its
    target (the GPU target bounds each involution layer's; the CPU target has no bound)."""
    result = {"target": target, "ops": ops, "dispatch_ms": ops * GPU_DISPATCH_US / 1000, "layer_ops": layer_ops}
    warnings = []
    if target == "gpu":
        result["max_layer_ops"] = GPU_MAX_LAYER_OPS
        over = {name: n for name, n in layer_ops.items() if n > GPU_MAX_LAYER_OPS}
        if over:
            worst = max(over, key=over.get)
            warnings.append(f"{len(over)} involution layer(s) have more than {GPU_MAX_LAYER_OPS} ops ({worst}: "
                            f"{over[worst]}): each op is a GPU dispatch; build them with strategy='separable'")
    result["warnings"] = warnings
    return result
