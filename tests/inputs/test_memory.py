"""In-memory checkpoints and probe data: digests, unwrapping, batches from Python objects."""

from __future__ import annotations

import pytest
import torch

from symtool.errors import ProbeError
from symtool.inputs.memory import MemoryProbe, memory_checkpoint, tensors_sha256
from symtool.inputs.probes import Batch


def test_digest_sees_every_bit_and_no_order() -> None:
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}
    same = {"b": a["b"].clone(), "w": a["w"].clone()}
    assert tensors_sha256(a) == tensors_sha256(same)
    flipped = a["w"].clone()
    flipped.view(torch.int32)[0, 0] ^= 1  # one bit of one number
    assert tensors_sha256({**a, "w": flipped}) != tensors_sha256(a)
    assert tensors_sha256({**a, "w": a["w"].reshape(3, 2)}) != tensors_sha256(a)  # shape
    assert tensors_sha256({**a, "w": a["w"].double()}) != tensors_sha256(a)  # dtype
    assert tensors_sha256({"v": a["w"], "b": a["b"]}) != tensors_sha256(a)  # names


def test_memory_checkpoint_loads_like_a_file() -> None:
    sd = {"module.0.weight": torch.ones(2, 2), "module.0.bias": torch.ones(2)}
    c = memory_checkpoint(sd, step=7, label="Net")
    assert (str(c.path), c.step, c.format, c.size) == ("<Net step 7>", 7, "memory", 24)
    loaded = c.load()
    assert loaded.stripped_prefix == "module."
    assert set(loaded.tensors) == {"0.weight", "0.bias"}
    assert c.sha256() == tensors_sha256(sd)


def test_probe_forms() -> None:
    x, y = torch.randn(10, 3), torch.arange(10)
    lm = list(MemoryProbe(x, batch_size=4).batches())
    assert [b.size for b in lm] == [4, 4, 2] and torch.equal(lm[0].y, x[:4])
    cut = list(MemoryProbe((x, y), batch_size=4, samples=6).batches())
    assert [b.size for b in cut] == [4, 2] and torch.equal(cut[1].y, y[4:6])
    d = MemoryProbe({"ids": x, "t": y}, inputs="ids", targets="t", batch_size=100)
    assert d.describe() == {"source": "<dict>", "sha256": d.describe()["sha256"], "samples": 10}
    with pytest.raises(ProbeError, match="lacks 't'"):
        MemoryProbe({"x": x, "y": y}, targets="t")
    with pytest.raises(ProbeError, match="first axes"):
        MemoryProbe((x, y[:3]))
    batches = [{"input_ids": x[:5], "attention_mask": x[:5] > 0, "labels": y[:5]}]
    (b,) = MemoryProbe(batches, targets="labels").batches()
    assert isinstance(b.x, dict) and set(b.x) == {"input_ids", "attention_mask"}
    assert torch.equal(b.y, y[:5])
    gen = MemoryProbe(Batch(x[i : i + 5], y[i : i + 5]) for i in (0, 5))
    assert [b.size for b in gen.batches()] == [5, 5] == [b.size for b in gen.batches()]


def test_a_dataloader_is_not_iterated_when_the_probe_is_made() -> None:
    ds = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.arange(8))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    rng = torch.get_rng_state()
    probe = MemoryProbe(loader)
    assert torch.equal(torch.get_rng_state(), rng)  # iter(loader) would draw a seed
    assert probe.source == "<DataLoader>" and sum(b.size for b in probe.batches()) == 8
