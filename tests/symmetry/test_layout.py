"""Layer discovery: linear/conv maps, unit pairs, attention layouts, skipped tensors."""

from __future__ import annotations

import pytest
import torch

from symtool.errors import UsageError
from symtool.symmetry.layout import discover, layer_bias, layer_matrix


def _mlp_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5),
                              torch.nn.ReLU(), torch.nn.Linear(5, 3))
    return net.state_dict()


def _gpt2_state(d: int = 8, blocks: int = 2, vocab: int = 11) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {"transformer.wte.weight": torch.randn(vocab, d, generator=g),
          "transformer.wpe.weight": torch.randn(7, d, generator=g)}
    for i in range(blocks):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = torch.ones(d), torch.zeros(d)
        sd[p + "attn.bias"] = torch.ones(1, 1, 7, 7, dtype=torch.bool)
        sd[p + "attn.c_attn.weight"] = torch.randn(d, 3 * d, generator=g)
        sd[p + "attn.c_attn.bias"] = torch.randn(3 * d, generator=g)
        sd[p + "attn.c_proj.weight"] = torch.randn(d, d, generator=g)
        sd[p + "attn.c_proj.bias"] = torch.randn(d, generator=g)
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = torch.ones(d), torch.zeros(d)
        sd[p + "mlp.c_fc.weight"] = torch.randn(d, 4 * d, generator=g)
        sd[p + "mlp.c_fc.bias"] = torch.randn(4 * d, generator=g)
        sd[p + "mlp.c_proj.weight"] = torch.randn(4 * d, d, generator=g)
        sd[p + "mlp.c_proj.bias"] = torch.randn(d, generator=g)
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = torch.ones(d), torch.zeros(d)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def test_mlp_layers_pairs_and_classifier():
    lay = discover(_mlp_state())
    assert [lm.name for lm in lay.layers] == ["0", "2", "4"]
    assert [(p.incoming, p.outgoing, p.width, p.source) for p in lay.pairs] == [
        ("0", "2", 1, "auto"), ("2", "4", 1, "auto")]
    assert lay.classifier == "4.weight" and lay.classifier_bias == "4.bias"
    assert lay.skipped == ()


def test_norm_between_layers_breaks_the_chain_and_is_skipped_with_reason():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 2))
    sd = net.state_dict()
    sd["step"] = torch.tensor(3)  # non-float: ignored
    sd["mask"] = torch.ones(3, dtype=torch.bool)
    lay = discover(sd)
    assert lay.pairs == ()
    assert [s.name for s in lay.skipped] == ["1.weight", "1.bias"]
    assert all("1-D" in s.reason for s in lay.skipped)


def test_conv_chain_and_flatten_into_linear():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 16, 10))
    lay = discover(net.state_dict())
    assert lay.layer("0").shape == (8, 27) and lay.layer("0").kind == "conv"
    assert [(p.incoming, p.outgoing, p.kind, p.width) for p in lay.pairs] == [
        ("0", "2", "conv", 9), ("2", "5", "conv_to_linear", 16)]
    assert torch.equal(layer_matrix(net.state_dict(), lay.layer("2")),
                       net[2].weight.detach().reshape(4, -1).double())


def test_explicit_pairs_replace_auto_and_errors_list_every_problem():
    sd = _mlp_state()
    lay = discover(sd, pairs=[("0", "2", "tanh")])
    assert [(p.incoming, p.outgoing, p.activation, p.source) for p in lay.pairs] == [
        ("0", "2", "tanh", "explicit")]
    with pytest.raises(UsageError) as err:
        discover(sd, pairs=[("0", "4"), ("nope", "2"), ("2", "4", "swish")])
    msg = str(err.value)
    assert "0:4" in msg and "nope" in msg and "swish" in msg


def test_gpt2_layout_is_transposed_split_and_paired():
    sd = _gpt2_state()
    lay = discover(sd)
    names = [lm.name for lm in lay.layers]
    assert names[:5] == ["transformer.h.0.attn.c_attn.q", "transformer.h.0.attn.c_attn.k",
                         "transformer.h.0.attn.c_attn.v", "transformer.h.0.attn.c_proj",
                         "transformer.h.0.mlp.c_fc"]
    assert [(p.incoming, p.outgoing) for p in lay.pairs] == [
        (f"transformer.h.{i}.mlp.c_fc", f"transformer.h.{i}.mlp.c_proj") for i in range(2)]
    k = lay.layer("transformer.h.1.attn.c_attn.k")
    stored = sd["transformer.h.1.attn.c_attn.weight"]
    assert torch.equal(layer_matrix(sd, k), stored.T[8:16].double())
    assert torch.equal(layer_bias(sd, k), sd["transformer.h.1.attn.c_attn.bias"][8:16].double())
    assert lay.layer("transformer.h.0.mlp.c_fc").shape == (32, 8)
    assert lay.attention[0].layout == "gpt2" and lay.attention[0].o == "transformer.h.0.attn.c_proj"
    reasons = {s.name: s.reason for s in lay.skipped}
    assert "embedding" in reasons["transformer.wte.weight"]
    assert reasons["lm_head.weight"] == "tied to embedding transformer.wte.weight"
    assert lay.classifier == "lm_head.weight"


def test_multihead_attention_fused_and_kdim_layouts():
    mha = torch.nn.MultiheadAttention(8, 2)
    lay = discover({f"attn.{k}": v for k, v in mha.state_dict().items()})
    assert lay.attention[0].layout == "fused" and lay.attention[0].o == "attn.out_proj"
    assert [lm.name for lm in lay.layers][:3] == ["attn.in_proj.q", "attn.in_proj.k",
                                                  "attn.in_proj.v"]
    assert lay.pairs == ()
    kd = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=3)
    lay = discover(kd.state_dict())
    assert [lay.layer(n).shape for n in ("q_proj", "k_proj", "v_proj")] == [(8, 8), (8, 5), (8, 3)]
    assert torch.equal(layer_bias(kd.state_dict(), lay.layer("v_proj")),
                       kd.in_proj_bias.detach()[16:24].double())


@pytest.mark.parametrize("names,o", [
    (("q_proj", "k_proj", "v_proj", "o_proj"), "layers.0.attn.o_proj"),
    (("query", "key", "value", None), "layers.0.output.dense"),
    (("wq", "wk", "wv", "wo"), "layers.0.attn.wo"),
], ids=["llama", "bert", "meta"])
def test_separate_projections_are_found(names, o):
    g = torch.Generator().manual_seed(2)
    sd = {}
    for n in names:
        if n is not None:
            sd[f"layers.0.attn.{n}.weight"] = torch.randn(8, 8, generator=g)
    if names[3] is None:
        sd["layers.0.output.dense.weight"] = torch.randn(8, 8, generator=g)
    sd["layers.0.mlp.up.weight"] = torch.randn(16, 8, generator=g)
    sd["layers.0.mlp.down.weight"] = torch.randn(8, 16, generator=g)
    lay = discover(sd)
    att = lay.attention[0]
    assert (att.layout, att.o) == ("separate", o)
    pairs = [(p.incoming, p.outgoing) for p in lay.pairs]
    assert pairs == [("layers.0.mlp.up", "layers.0.mlp.down")]


def test_embedding_not_a_layer_and_explicit_classifier():
    emb = torch.nn.Embedding(20, 6)
    lin = torch.nn.Linear(6, 4)
    sd = {"embed.weight": emb.weight.detach(), "head.weight": lin.weight.detach(),
          "head.bias": lin.bias.detach()}
    lay = discover(sd, classifier="embed")
    assert [lm.name for lm in lay.layers] == ["head"]
    assert lay.classifier == "embed.weight"
    assert discover(sd, classifier="").classifier is None
    with pytest.raises(UsageError):
        discover(sd, classifier="missing")
