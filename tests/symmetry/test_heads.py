"""Attention heads: planted low-rank, dead and duplicate heads in every weight layout."""

from __future__ import annotations

import pytest
import torch

from symtool.symmetry.analysis import analyse_symmetry
from symtool.symmetry.records import SymmetrySettings

D, H, DH = 16, 4, 4


def _planted_heads(seed: int = 0) -> dict[str, torch.Tensor]:
    """q, k, v (rows = heads), o (columns = heads), biases: head 1 has QK rank 2 and OV rank
    3, head 2 is zero, head 3 copies head 0."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    q, k, v, o = rnd(D, D), rnd(D, D), rnd(D, D), rnd(D, D)
    bq, bk, bv = rnd(D), rnd(D), rnd(D)
    h1 = slice(4, 8)
    c = rnd(4, 2)
    q[h1], k[h1] = c @ rnd(2, D), c @ rnd(2, D)
    e = rnd(4, 3)
    v[h1], o[:, h1] = e @ rnd(3, D), (e @ rnd(3, D)).T
    h2 = slice(8, 12)
    for t in (q, k, v, bq, bk, bv):
        t[h2] = 0.0
    o[:, h2] = 0.0
    for t in (q, k, v, bq, bk, bv):
        t[12:16] = t[0:4]
    o[:, 12:16] = o[:, 0:4]
    return {"q": q, "k": k, "v": v, "o": o, "bq": bq, "bk": bk, "bv": bv}


def _fused(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"attn.in_proj_weight": torch.cat([p["q"], p["k"], p["v"]]),
            "attn.in_proj_bias": torch.cat([p["bq"], p["bk"], p["bv"]]),
            "attn.out_proj.weight": p["o"], "attn.out_proj.bias": torch.zeros(D)}


def _gpt2(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"h.0.attn.c_attn.weight": torch.cat([p["q"], p["k"], p["v"]]).T.contiguous(),
            "h.0.attn.c_attn.bias": torch.cat([p["bq"], p["bk"], p["bv"]]),
            "h.0.attn.c_proj.weight": p["o"].T.contiguous(), "h.0.attn.c_proj.bias": torch.zeros(D)}


def _separate(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {}
    for n in "qkv":
        sd[f"blk.self_attn.{n}_proj.weight"] = p[n]
        sd[f"blk.self_attn.{n}_proj.bias"] = p["b" + n]
    sd["blk.self_attn.o_proj.weight"] = p["o"]
    return sd


@pytest.mark.parametrize("layout", [_fused, _gpt2, _separate], ids=["fused", "gpt2", "separate"])
def test_planted_heads_are_recovered_in_every_layout(layout):
    res = analyse_symmetry(layout(_planted_heads()), heads=H)
    (att,) = res.attention
    assert att.reason is None and (att.heads, att.kv_heads, att.head_dim) == (4, 4, 4)
    qk = [{t.tau: t.count for t in h.qk_ranks}[1e-2] for h in att.head_records]
    ov = [{t.tau: t.count for t in h.ov_ranks}[1e-3] for h in att.head_records]
    assert qk == [4, 2, 0, 4] and ov == [4, 3, 0, 4]
    assert att.dead_heads == (2,)
    assert att.clusters == ((0, 3),) and att.pairs[0].distance == 0.0
    assert {d.tau: d.dead for d in att.dead}[1e-2] == 1
    assert att.head_records[2].norm_ratio == 0.0


def test_head_ranks_equal_eigenvalue_ranks_of_the_pair_kernels():
    """sqrt(eig K_QK) are the singular values of [W_q,h | W_k,h]: compare with dense K."""
    g = torch.Generator().manual_seed(3)
    sd = {}
    mats = {}
    for n in "qkvo":
        u, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
        spread = torch.tensor([1, 0.5, 0.05, 0.005, 5e-4, 1e-5, 1, 0.2] * 2, dtype=torch.float64)
        w = u @ torch.diag(spread) @ torch.linalg.qr(torch.randn(D, D, generator=g,
                                                                 dtype=torch.float64))[0]
        mats[n] = w
        sd[f"m.{n}_proj.weight"] = w
    (att,) = analyse_symmetry(sd, heads=H).attention
    for h, rec in enumerate(att.head_records):
        rows = slice(h * DH, (h + 1) * DH)
        wq, wk, wv, wo = mats["q"][rows], mats["k"][rows], mats["v"][rows], mats["o"][:, rows]
        for kern, got in ((wq @ wq.T + wk @ wk.T, rec.qk_ranks),
                          (wv @ wv.T + wo.T @ wo, rec.ov_ranks)):
            lam = torch.linalg.eigvalsh(kern).flip(0).clamp_min(0)
            ratio = (lam / lam[0]).sqrt()
            floor = 2 * D * torch.finfo(torch.float64).eps
            assert [t.count for t in got] == [int((ratio > max(t.tau, floor)).sum()) for t in got]


def test_grouped_query_heads_share_key_value_rows():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(D, D, generator=g)
    k, v = torch.randn(8, D, generator=g), torch.randn(8, D, generator=g)
    q[4:8] = q[0:4]  # heads 0 and 1 share kv head 0 and have equal queries: duplicates
    sd = {"a.q_proj.weight": q, "a.k_proj.weight": k, "a.v_proj.weight": v,
          "a.o_proj.weight": torch.cat([torch.eye(D)[:, :4]] * 4, dim=1)}
    (att,) = analyse_symmetry(sd, heads=H).attention
    assert (att.kv_heads, att.head_dim) == (2, 4)
    assert att.clusters == ((0, 1),)


def test_heads_need_a_head_count_that_fits():
    sd = _fused(_planted_heads())
    assert analyse_symmetry(sd).attention[0].reason == "number of heads not given"
    assert "do not split" in analyse_symmetry(sd, heads=3).attention[0].reason
    big = analyse_symmetry(sd, SymmetrySettings(dead_tau=1e-1), heads=H).attention[0]
    assert big.dead_heads == (2,)


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_head_ranks_reach_the_table_and_csv(tmp_path, fmt):
    """The planted QK ranks 4, 2, 0, 4 (τ = 1e-2) are what the human table and CSV show."""
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from symtool.cli.app import app

    path = tmp_path / "attn.safetensors"
    save_file(_gpt2(_planted_heads()), str(path))
    res = CliRunner().invoke(app, ["symmetry", str(path), "--heads", str(H), "-f", fmt],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        rows = [r.split(",") for r in res.stdout.strip().splitlines()]
        col = {name: i for i, name in enumerate(rows[0])}
        qk = {r[col["quantity"]]: int(r[col["value"]]) for r in rows[1:]
              if r[col["quantity"]].endswith(".qk_rank") and float(r[col["tau"]]) == 1e-2}
        assert qk == {"head0.qk_rank": 4, "head1.qk_rank": 2, "head2.qk_rank": 0,
                      "head3.qk_rank": 4}
        at = {(r[col["quantity"]], float(r[col["tau"]])): r[col["value"]] for r in rows[1:]
              if r[col["group"]] == "attention" and r[col["tau"]]}
        assert at[("dead_heads", 1e-2)] == "1"  # head 2
        assert at[("duplicate_heads_pairs", 1e-2)] == "1"  # heads 0 and 3
    else:
        line = next(x for x in res.stdout.splitlines() if x.startswith("attention"))
        assert "dead@0.01 1" in line and "identical pairs@0.01 1" in line
        assert "QK ranks@0.01 4, 2, 0, 4" in line


def test_head_gram_equals_the_dense_products():
    from symtool.symmetry.heads import head_gram

    g = torch.Generator().manual_seed(11)
    qh, kh, vh = (torch.randn(H, DH, D, generator=g, dtype=torch.float64) for _ in range(3))
    oh = torch.randn(H, DH, D, generator=g, dtype=torch.float64)
    bq, bv = torch.randn(H, DH, generator=g, dtype=torch.float64), torch.randn(
        H, DH, generator=g, dtype=torch.float64)
    feats = torch.stack([torch.cat([(qh[h].T @ kh[h]).flatten(), kh[h].T @ bq[h],
                                    (oh[h].T @ vh[h]).flatten(), oh[h].T @ bv[h]])
                         for h in range(H)])
    assert torch.allclose(head_gram(qh, kh, vh, oh, bq, bv), feats @ feats.T, rtol=1e-12)
    raw = torch.stack([torch.cat([(qh[h].T @ kh[h]).flatten(), vh[h].flatten(), bv[h]])
                       for h in range(H)])
    assert torch.allclose(head_gram(qh, kh, vh, None, None, bv), raw @ raw.T, rtol=1e-12)


def test_heads_equal_up_to_their_internal_symmetries_are_duplicates():
    """Head 3 computes what head 0 does through Q → AQ, K → A⁻ᵀK, V → BV, O → OB⁻¹ and
    another key bias; compared as raw parameters they would be far apart."""
    p = _planted_heads(seed=7)
    g = torch.Generator().manual_seed(8)
    a = torch.randn(DH, DH, generator=g) + 3 * torch.eye(DH)
    b = -torch.randn(DH, DH, generator=g) - 3 * torch.eye(DH)
    h0, h3 = slice(0, 4), slice(12, 16)
    p["q"][h3], p["bq"][h3] = a @ p["q"][h0], a @ p["bq"][h0]
    p["k"][h3] = torch.linalg.inv(a).T @ p["k"][h0]
    p["bk"][h3] = torch.randn(DH, generator=g)  # cancels in the softmax
    p["v"][h3], p["bv"][h3] = b @ p["v"][h0], b @ p["bv"][h0]
    p["o"][:, h3] = p["o"][:, h0] @ torch.linalg.inv(b)
    (att,) = analyse_symmetry(_separate(p), heads=H).attention
    assert att.clusters == ((0, 3),)
    assert att.pairs[0].distance < 1e-9
    raw = torch.cat([p[n][h0].flatten() for n in "qkv"]), torch.cat(
        [p[n][h3].flatten() for n in "qkv"])
    assert float((raw[0] - raw[1]).norm()) > 0.5 * float(raw[0].norm())
