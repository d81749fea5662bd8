"""Hugging Face checkpoint folders (:mod:`symtool.inputs.hf`): models built from
config.json, tied keys, Conv1D as a linear map, the causal-LM loss, token probes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from symtool.errors import ModelError
from symtool.inputs import checkpoints as ck
from symtool.inputs import hf, models, probes
from tests import hf_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {k: hf_runs.save_run(root, k) for k in ("gpt2", "llama", "bert")}


@pytest.mark.parametrize(
    ("kind", "cls", "loss"),
    [
        ("gpt2", "GPT2LMHeadModel", "causal_lm"),
        ("llama", "LlamaForCausalLM", "causal_lm"),
        ("bert", "BertForMaskedLM", "masked_lm"),
    ],
)
def test_folder_builds_its_architecture_and_loads_strictly(
    runs: dict[str, Path], kind: str, cls: str, loss: str
) -> None:
    ckpts = ck.discover([runs[kind]])
    assert [c.step for c in ckpts] == [10, 20]
    folder = hf.config_dir(ckpts[-1].path)
    assert folder == ckpts[-1].path
    arch = hf.architecture(hf.read_config(folder))
    assert arch.name == cls
    assert hf.default_loss(arch) == loss
    model = models.build_model(None, None, {}, config_dir=folder)
    assert type(model).__name__ == cls
    sd = models.complete_tied(model, ck.load(ckpts[-1]).tensors)
    models.load_state(model, sd, source=folder)
    stored = ck.load(ckpts[-1]).tensors
    for key, value in model.state_dict().items():
        assert torch.equal(value, (stored.get(key, sd[key])).float()), key


def test_gpt2_tied_head_missing_from_file_is_the_embedding(runs: dict[str, Path]) -> None:
    ckpt = ck.discover([runs["gpt2"]])[0]
    stored = ck.load(ckpt).tensors
    assert "lm_head.weight" not in stored  # save_pretrained drops the tied head
    model = hf.build_model(ckpt.path)
    with pytest.raises(ModelError, match=r"missing 1 key \(lm_head\.weight"):
        models.load_state(model, stored, source=ckpt.path)
    full = models.complete_tied(model, stored)
    models.load_state(model, full, source=ckpt.path)
    assert torch.equal(model.lm_head.weight, stored["transformer.wte.weight"])


def test_wrapper_prefix_is_found_with_a_tied_key_missing(runs: dict[str, Path]) -> None:
    ckpt = ck.discover([runs["gpt2"]])[0]
    stored = {f"model.{k}": v for k, v in ck.load(ckpt).tensors.items()}
    model = hf.build_model(ckpt.path)
    sd, prefix = models.fit_prefix(model, stored)
    assert prefix == "model."
    models.load_state(model, models.complete_tied(model, sd), source=ckpt.path)


def test_conv1d_is_a_linear_layer_with_the_transposed_weight() -> None:
    model = hf_runs.model("gpt2")
    layers, skipped = models.select_layers(model)
    names = [r.name for r in layers]
    expected = [
        f"transformer.h.{i}.{m}" for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ] + ["lm_head"]
    assert names == expected
    assert not [s for s in skipped if "Conv1D" in s.reason or "owns parameters" in s.reason]
    ref = layers[0]
    conv = model.transformer.h[0].attn.c_attn
    assert (ref.kind, ref.d_in, ref.d_out, ref.transposed) == ("linear", 16, 48, True)
    x = torch.randn(3, 16)
    W = ref.weight_matrix()
    assert torch.allclose(conv(x), x @ W.T + conv.bias, atol=1e-6)


def test_causal_lm_loss_is_the_shifted_summed_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[0, 3] = -100
    want = 0.0
    for b in range(2):
        for t in range(4):
            if labels[b, t + 1] != -100:
                want -= float(torch.log_softmax(logits[b, t], -1)[labels[b, t + 1]])
    got = probes.resolve_loss("causal_lm")(logits, labels)
    assert abs(float(got) - want) < 1e-12
    # Hugging Face's own loss is the mean over the same terms
    model = hf_runs.model("gpt2").double()
    batch = hf_runs.token_probe()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    terms = int((labels[:, 1:] != -100).sum())
    ours = float(probes.causal_lm_sum(out.logits, labels))
    assert abs(ours - float(out.loss) * terms) < 1e-6 * ours  # HF's loss is float32
    with pytest.raises(ValueError, match="causal_lm needs"):
        probes.causal_lm_sum(torch.zeros(4, 7), torch.zeros(4))


def test_default_losses_by_architecture() -> None:
    def arch(name: str, labels: int | None = None) -> hf.Architecture:
        cfg = {"architectures": [name], **({"num_labels": labels} if labels else {})}
        return hf.architecture(cfg)

    assert hf.default_loss(arch("MistralForCausalLM")) == "causal_lm"
    assert hf.default_loss(arch("GPT2LMHeadModel")) == "causal_lm"
    assert hf.default_loss(arch("RobertaForMaskedLM")) == "masked_lm"
    assert hf.default_loss(arch("BertForSequenceClassification", 3)) == "cross_entropy"
    assert hf.default_loss(arch("BertForSequenceClassification", 1)) == "mse"
    assert hf.default_loss(None) == "cross_entropy"


def test_architecture_reads_heads_and_activation() -> None:
    llama = hf.architecture(hf_runs.config("llama").to_dict())
    assert (llama.heads, llama.kv_heads, llama.head_dim, llama.activation) == (4, 2, 4, "silu")
    assert llama.tied is False
    gpt2 = hf.architecture(hf_runs.config("gpt2").to_dict())
    assert (gpt2.heads, gpt2.head_dim, gpt2.hidden_act, gpt2.activation) == (4, 4, "gelu_new",
                                                                              "gelu")
    assert gpt2.tied is True


def test_missing_transformers_names_the_extra(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"symtool\[hf\]") as info:
        hf.build_model(runs["gpt2"] / "checkpoint-10")
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_token_probe_keys_are_recognised(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    batch = hf_runs.token_probe()
    save_file(batch, tmp_path / "p.safetensors")
    data = probes.load_probe(tmp_path / "p.safetensors")
    assert isinstance(data.x, dict) and set(data.x) == {"input_ids", "attention_mask"}
    keep = batch["attention_mask"].bool()
    assert torch.equal(data.mask, keep)
    assert torch.equal(data.y[keep], batch["input_ids"][keep])
    assert bool((data.y[~keep] == -100).all())
    assert (data.inputs, data.targets, data.n) == ("input_ids", "input_ids", 5)
    labels = torch.full_like(batch["input_ids"], 3)
    save_file({**batch, "labels": labels}, tmp_path / "q.safetensors")
    data = probes.load_probe(tmp_path / "q.safetensors", samples=2)
    assert torch.equal(data.y, labels[:2]) and data.targets == "labels"
    sizes = [b.x["input_ids"].shape[0] for b in probes.iter_batches(data, 1)]
    assert sizes == [1, 1]


def test_training_state_files_are_never_checkpoints(runs: dict[str, Path]) -> None:
    folder = runs["gpt2"] / "checkpoint-20"
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state_0.pth"):
        (folder / name).write_bytes(b"not a pickle symtool may open")
    ckpts = ck.discover([runs["gpt2"]])
    assert [c.files for c in ckpts][-1] == (folder / "model.safetensors",)
    assert ck.load(ckpts[-1]).tensors  # reads only the model file


def test_a_config_json_of_ones_own_is_not_a_model_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"lr": 0.1, "epochs": 3}')
    (tmp_path / "step_1.safetensors").write_bytes(b"")
    assert hf.config_dir(tmp_path / "step_1.safetensors") is None
    (tmp_path / "config.json").write_text("not json")
    assert hf.config_dir(tmp_path) is None
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert hf.config_dir(tmp_path / "step_1.safetensors") == tmp_path
