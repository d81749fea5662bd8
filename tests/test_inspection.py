"""``inspect``'s dry run on transformer state dicts written by hand (no ``transformers``):
GPT-2 (Conv1D layout, ``c_attn``/``c_proj`` in both blocks) and Llama (GQA, gate/up/down)."""

from __future__ import annotations

import pytest

from symtool.inputs.checkpoints import TensorInfo, block_role, tensor_kind
from symtool.inspection import _dry_run

E, F, V, KV = 64, 256, 100, 16


def gpt2_infos() -> list[TensorInfo]:
    """Key names and shapes of ``GPT2LMHeadModel`` (Conv1D weights are ``in × out``)."""
    shapes = [("transformer.wte.weight", (V, E)), ("transformer.wpe.weight", (32, E))]
    for i in range(2):
        p = f"transformer.h.{i}."
        shapes += [
            (p + "ln_1.weight", (E,)), (p + "ln_1.bias", (E,)),
            (p + "attn.c_attn.weight", (E, 3 * E)), (p + "attn.c_attn.bias", (3 * E,)),
            (p + "attn.c_proj.weight", (E, E)), (p + "attn.c_proj.bias", (E,)),
            (p + "ln_2.weight", (E,)), (p + "ln_2.bias", (E,)),
            (p + "mlp.c_fc.weight", (E, F)), (p + "mlp.c_fc.bias", (F,)),
            (p + "mlp.c_proj.weight", (F, E)), (p + "mlp.c_proj.bias", (E,)),
        ]
    shapes += [("transformer.ln_f.weight", (E,)), ("transformer.ln_f.bias", (E,))]
    return [TensorInfo(n, s, "float32") for n, s in shapes]


def llama_infos() -> list[TensorInfo]:
    """Key names and shapes of ``LlamaForCausalLM`` with grouped-query attention, sorted
    as safetensors stores them."""
    shapes = [("model.embed_tokens.weight", (V, E)), ("model.norm.weight", (E,))]
    for i in range(2):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (E,)),
            (p + "self_attn.q_proj.weight", (E, E)), (p + "self_attn.k_proj.weight", (KV, E)),
            (p + "self_attn.v_proj.weight", (KV, E)), (p + "self_attn.o_proj.weight", (E, E)),
            (p + "post_attention_layernorm.weight", (E,)),
            (p + "mlp.gate_proj.weight", (F, E)), (p + "mlp.up_proj.weight", (F, E)),
            (p + "mlp.down_proj.weight", (E, F)),
        ]
    shapes.append(("lm_head.weight", (V, E)))
    return [TensorInfo(n, s, "bfloat16") for n, s in sorted(shapes)]


@pytest.mark.parametrize(
    ("name", "kind", "role"),
    [
        ("transformer.h.0.attn.c_attn.weight", "attention", "attention"),
        ("transformer.h.0.attn.c_proj.weight", "attention", "attention"),
        ("transformer.h.0.attn.c_proj.bias", "attention", "attention"),
        ("transformer.h.0.mlp.c_proj.weight", "linear", "MLP"),
        ("transformer.h.0.mlp.c_proj.bias", "bias", "MLP"),
        ("transformer.h.0.mlp.c_fc.weight", "linear", "MLP"),
        ("model.layers.3.self_attn.o_proj.weight", "attention", "attention"),
        ("model.layers.3.self_attn.k_proj.weight", "attention", "attention"),
        ("model.layers.3.mlp.down_proj.weight", "linear", "MLP"),
        ("bert.encoder.layer.0.attention.self.query.weight", "attention", "attention"),
        ("bert.encoder.layer.0.intermediate.dense.weight", "linear", "MLP"),
        ("fc.weight", "linear", None),
    ],
)
def test_blocks_are_told_apart_by_module_names(name: str, kind: str, role: str | None) -> None:
    shape = (E,) if name.endswith("bias") else (E, E)
    assert tensor_kind(name, shape) == kind
    assert block_role(name) == role


def _plan(infos: list[TensorInfo]) -> dict[str, tuple[list[str], list[str]]]:
    return _dry_run(infos)[0]


def test_gpt2_mlp_c_proj_is_mlp_and_every_projection_gets_align() -> None:
    infos = gpt2_infos()
    plan = _plan(infos)
    kinds = {i.name: tensor_kind(i.name, i.shape) for i in infos}
    for i in range(2):
        p = f"transformer.h.{i}."
        for leaf in ("attn.c_attn", "attn.c_proj"):
            assert kinds[p + leaf + ".weight"] == "attention"
            analyses, notes = plan[p + leaf + ".weight"]
            assert analyses == ["symmetry", "align"] and "attention projection" in notes
        for leaf in ("mlp.c_fc", "mlp.c_proj"):
            assert kinds[p + leaf + ".weight"] == "linear"
            analyses, notes = plan[p + leaf + ".weight"]
            assert analyses == ["symmetry", "align"] and "MLP projection" in notes
            assert not any("attention" in n for n in notes)


def test_llama_q_k_v_o_get_align_and_symmetry() -> None:
    plan = _plan(llama_infos())
    for i in range(2):
        p = f"model.layers.{i}."
        for leaf in ("q_proj", "k_proj", "v_proj", "o_proj"):
            analyses, notes = plan[p + "self_attn." + leaf + ".weight"]
            assert analyses == ["symmetry", "align"], (leaf, analyses)
            assert "attention projection" in notes
        for leaf in ("gate_proj", "up_proj", "down_proj"):
            analyses, notes = plan[p + "mlp." + leaf + ".weight"]
            assert analyses == ["symmetry", "align"] and "MLP projection" in notes
    assert plan["model.embed_tokens.weight"][0] == []


def test_the_estimate_counts_each_dense_map_once_with_its_shape() -> None:
    from symtool.align.estimate import layer_cost
    from symtool.inspection import align_estimate

    _, dense = _dry_run(gpt2_infos())
    p = "transformer.h.0."
    assert (p + "attn.c_attn", 3 * E, E) in dense  # Conv1D: weight is in × out
    assert (p + "mlp.c_fc", F, E) in dense and (p + "mlp.c_proj", E, F) in dense
    assert len(dense) == 8
    est = align_estimate(dense)
    assert est["layers"] == 8
    assert est["decompose_flops"] == sum(layer_cost(n, i, o).decompose_flops for n, o, i in dense)
    assert est["sums_bytes"] == sum(layer_cost(n, i, o).sums_bytes for n, o, i in dense)
