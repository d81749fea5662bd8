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


def test_layer_warnings_name_few_rows_and_solver_fallbacks(monkeypatch) -> None:
    """``warnings`` of a layer (schema v4): fewer rows than ``d_in`` names side a's
    relations and fits; a fallback solver is named with the matrices' relations."""
    from symtool import linalg as la
    from symtool.align import crh
    from symtool.align.moments import LayerAccumulator
    from symtool.align.records import FEW_ROWS_AFFECTS, layer_warnings

    g = torch.Generator().manual_seed(4)
    W = torch.randn(3, 8, generator=g, dtype=torch.float64)
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)  # 5 rows < d_in = 8
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    acc = LayerAccumulator("paper")
    acc.add(x, x @ W.T, y, y @ W)
    m = acc.finish(W)
    ws = layer_warnings(m.n, 8, 3, crh.layer_spectra(m))
    assert [w["kind"] for w in ws] == ["few_rows"]
    assert ws[0]["affects"] == list(FEW_ROWS_AFFECTS["a"]) and "5 probe rows < d_in = 8" in (
        ws[0]["message"]
    )

    def fails(*args, **kwargs):
        raise RuntimeError("linalg.eigh: failed to converge")

    monkeypatch.setattr(la, "HOST_BLAS", False)
    monkeypatch.setattr(torch.linalg, "eigh", fails)
    ws = layer_warnings(m.n, 8, 3, crh.layer_spectra(m))
    fallback = {w["message"].split(":")[0]: w for w in ws if w["kind"] == "solver_fallback"}
    # every d × d eigh with vectors; side a (5 rows < 8) is decomposed from its rows and
    # Z_a from Z_b (symtool/align/bases.py), so no eigh of theirs can fall back
    assert set(fallback) == {"H_b", "Z_b"}
    assert fallback["H_b"]["affects"] == ["b-RGA", "b-RWA"]
    assert "scipy evr" in fallback["H_b"]["message"]
