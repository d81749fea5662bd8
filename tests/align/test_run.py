"""The align run's own logic (:mod:`symtool.align.run`): layers split into passes that fit
``--max-memory``."""

from __future__ import annotations

import torch


def test_partition_is_greedy_in_model_order() -> None:
    from symtool.align.moments import layer_bytes
    from symtool.align.run import partition_layers
    from symtool.inputs.models import LayerRef

    refs = [
        LayerRef(
            name=str(i), module=torch.nn.Linear(d_in, d_out), kind="linear", d_in=d_in, d_out=d_out
        )
        for i, (d_in, d_out) in enumerate([(6, 10), (10, 8), (8, 3), (3, 3)])
    ]
    sizes = [layer_bytes(r.d_in, r.d_out) for r in refs]
    assert partition_layers(refs, None) == [refs]
    groups = partition_layers(refs, sizes[0] + sizes[1])
    assert groups == [refs[:2], refs[2:]]
    for g in partition_layers(refs, max(sizes)):
        assert sum(layer_bytes(r.d_in, r.d_out) for r in g) <= max(sizes)
    assert [len(g) for g in partition_layers(refs, 1)] == [1, 1, 1, 1]
