"""``align`` on Hugging Face runs: every projection and the head captured (GPT-2's Conv1D
as ``W = weightᵀ``), the causal-LM loss by default, padded positions never rows, and α
equal to a hand-written float64 reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from symtool.align.run import AlignSettings, run_align
from symtool.inputs import checkpoints as ck
from symtool.inputs import hf
from tests import hf_runs
from tests.reference import np_pearson, second_moment


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {k: hf_runs.save_run(root, k) for k in ("gpt2", "llama", "bert")}


def _align(run: Path, **kw: object) -> dict:
    ckpts = ck.discover([run])
    settings = AlignSettings(
        data=run / "probe.safetensors", null_samples=2, bootstrap=0, verify=True,
        dtype="float64", **kw,
    )
    return run_align(ckpts, settings)


EXPECTED = {
    "gpt2": [f"transformer.h.{i}.{m}" for i in range(2)
             for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")] + ["lm_head"],
    "llama": [f"model.layers.{i}.{m}" for i in range(2)
              for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    + ["lm_head"],
}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_every_projection_and_the_head_verified(runs: dict[str, Path], kind: str) -> None:
    report = _align(runs[kind])
    assert report["provenance"]["settings"]["loss"] == "causal_lm"
    mask = hf_runs.token_probe()["attention_mask"]
    for entry in report["checkpoints"]:
        assert entry["status"] == "ok"
        layers = entry["layers"]
        assert [la["name"] for la in layers] == EXPECTED[kind]
        for la in layers:
            assert la["status"] == "ok", la
            assert la["rows"] == int(mask.sum())  # padded positions are no rows
            assert la["verify"]["h_b_error"] <= 1e-10
            assert la["verify"]["g_a_error"] <= 1e-10
        reasons = " ".join(s["reason"] for s in entry["skipped_layers"])
        assert "Conv1D" not in reasons and "owns parameters" not in reasons


def test_bert_masked_lm_runs_with_its_loss(runs: dict[str, Path]) -> None:
    report = _align(runs["bert"])
    assert report["provenance"]["settings"]["loss"] == "masked_lm"
    entry = report["checkpoints"][-1]
    names = [la["name"] for la in entry["layers"]]
    assert "bert.encoder.layer.1.attention.self.query" in names
    assert all(la["status"] == "ok" and la["verify"]["h_b_error"] <= 1e-10
               for la in entry["layers"])


def _reference_alphas(folder: Path, layer_name: str) -> tuple[float, float]:
    """α(H_a, G_a) and α(G_a, WᵀW) of one GPT-2 layer, by hand: Conv1D read as a linear
    map, the shifted summed cross-entropy written out, float64 moments of the rows."""
    model = hf.build_model(folder)
    stored = ck.load(ck.discover([folder])[0]).tensors
    stored.setdefault("lm_head.weight", stored["transformer.wte.weight"])
    model.load_state_dict(stored)
    model.double()
    layer = dict(model.named_modules())[layer_name]
    seen: dict[str, torch.Tensor] = {}

    def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        seen["x"], seen["y"] = args[0].detach(), out

    handle = layer.register_forward_hook(hook)
    batch = hf_runs.token_probe()
    logits = model(**batch).logits
    handle.remove()
    ids, keep = batch["input_ids"], batch["attention_mask"].bool()
    loss = logits.new_zeros(())
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if keep[b, t + 1]:
                loss = loss - torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]]
    loss.backward()
    W = layer.weight.detach().T  # Conv1D computes x @ weight: W = weightᵀ
    X, Y = seen["x"][keep], seen["y"].grad[keep]
    H_a, _ = second_moment(X, "paper")
    G_a, _ = second_moment(Y @ W, "paper")
    rga = np_pearson(H_a.numpy(), G_a.numpy())
    gwa = np_pearson(G_a.numpy(), (W.T @ W).numpy())
    return rga, gwa


def test_alpha_of_a_gpt2_layer_matches_a_hand_written_reference(runs: dict[str, Path]) -> None:
    run = runs["gpt2"]
    report = _align(run, layers=("transformer.h.1.mlp.c_fc", "transformer.h.0.attn.c_attn"))
    for entry in report["checkpoints"]:
        for la in entry["layers"]:
            rga, gwa = _reference_alphas(Path(entry["path"]), la["name"])
            assert np.isfinite(rga) and np.isfinite(gwa)
            assert abs(la["relations"]["f-RGA"]["alpha"] - rga) < 1e-10
            assert abs(la["relations"]["f-GWA"]["alpha"] - gwa) < 1e-10


def test_a_factory_building_the_model_needs_no_glue(runs: dict[str, Path], tmp_path: Path) -> None:
    """The issue's user: an ``AutoModelForCausalLM.from_config`` factory on a
    ``save_pretrained`` run (tied head missing from the file) aligns like no factory."""
    (tmp_path / "factory.py").write_text(
        "from tests import hf_runs\n\ndef make():\n    return hf_runs.model('gpt2')\n"
    )
    plain = _align(runs["gpt2"])
    built = _align(runs["gpt2"], factory="factory.py:make", base_dir=tmp_path)
    assert built["provenance"]["settings"]["loss"] == "causal_lm"
    for a, b in zip(plain["checkpoints"], built["checkpoints"], strict=True):
        assert [la["name"] for la in a["layers"]] == [la["name"] for la in b["layers"]]
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            for rid, rel in la["relations"].items():
                assert abs(rel["alpha"] - lb["relations"][rid]["alpha"]) < 1e-12


def test_bf16_weights_are_read_into_a_float32_model(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "gpt2"
    shutil.copytree(runs["gpt2"], run)
    for f in run.glob("checkpoint-*/model.safetensors"):
        sd = load_file(str(f))
        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(f),
                  metadata={"format": "pt"})
    report = run_align(ck.discover([run]), AlignSettings(
        data=run / "probe.safetensors", null_samples=0, bootstrap=0, verify=True))
    for entry in report["checkpoints"]:
        assert entry["status"] == "ok"
        for la in entry["layers"]:
            assert la["status"] == "ok" and la["verify"]["h_b_error"] < 1e-6


def test_collapse_of_a_causal_lm_is_asked_for_and_uses_next_token_labels(
    runs: dict[str, Path],
) -> None:
    """``--collapse`` skips an LM's vocabulary classes unless ``collapse_lm``; asked, the
    LM head's NC numbers equal a dense reference on its input rows labelled with the next
    token (padding and the last position dropped)."""
    from tests.align.test_capture_extras import _dense_nc

    off = _align(runs["gpt2"], collapse=True)
    head = off["checkpoints"][-1]["layers"][-1]["collapse"]
    assert head["status"] == "skipped" and "--collapse-lm" in head["reason"]

    rep = _align(runs["gpt2"], collapse=True, collapse_lm=True, nfa=True)
    head = rep["checkpoints"][-1]["layers"][-1]
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(
        runs["gpt2"] / "checkpoint-20", attn_implementation="eager").double().eval()
    probe = hf_runs.token_probe()
    ids, mask = probe["input_ids"], probe["attention_mask"]
    seen: list[torch.Tensor] = []
    handle = model.lm_head.register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    handle.remove()
    nxt = torch.full_like(ids, -100)
    nxt[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    keep = (mask == 1) & (nxt >= 0)
    h, y = seen[0][keep].numpy(), nxt[keep].numpy()
    ref = _dense_nc(h, y, model.lm_head.weight.detach().numpy())
    col = head["collapse"]
    assert col["status"] == "ok" and col["rows"] == int(keep.sum())
    assert col["classes"] == len(np.unique(y))
    for key in ("nc1", "equinorm", "equiangularity", "nc3"):
        assert col[key] == pytest.approx(ref[key], rel=1e-9), key
    pred = logits.argmax(-1)[keep].numpy()
    assert col["nc4"] == pytest.approx(float((ref["near"] != pred).mean()), abs=1e-15)
    nfa = head["nfa"]
    assert nfa["agop"]["method"] == "projection" and nfa["agop"]["error"] > 0
