"""probes.py: probe files, batches, user sources and sum-reduced losses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from symtool.errors import ProbeError
from symtool.inputs import checkpoints as ck
from symtool.inputs.probes import (
    LOSSES,
    PROBE_FILES,
    Batch,
    iter_batches,
    load_probe,
    probe_beside,
    resolve_loss,
    source_batches,
)

DT = torch.float64


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(10, 4, dtype=torch.bool)
    mask[3, 2:] = False
    return {
        "inputs": torch.randn(10, 4, 3, generator=g),
        "labels": torch.randint(0, 5, (10, 4), generator=g),
        "pad": mask,
        "other": torch.zeros(2),
    }


def _write(tmp_path: Path, fmt: str, data: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / f"probe{fmt}"
    if fmt == ".safetensors":
        save_file(data, str(path))
    elif fmt == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in data.items()})
    else:
        torch.save(data, path)
    return path


@pytest.mark.parametrize("fmt", [".safetensors", ".pt", ".npz"])
def test_load_formats(tmp_path: Path, fmt: str) -> None:
    data = _tensors()
    path = _write(tmp_path, fmt, data)
    probe = load_probe(path, inputs="inputs", targets="labels", mask="pad")
    assert torch.equal(probe.x, data["inputs"]) and torch.equal(probe.y, data["labels"])
    assert probe.mask is not None and torch.equal(probe.mask, data["pad"])
    assert probe.n == 10 and set(probe.keys) == set(data)
    assert probe.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    head = load_probe(path, inputs="inputs", targets="labels", mask="pad", samples=3)
    assert head.n == 3 and torch.equal(head.y, data["labels"][:3])
    assert head.mask is not None and head.mask.shape == (3, 4)
    assert load_probe(path, inputs="inputs", targets="labels", samples=99).n == 10


@pytest.mark.parametrize("fmt", [".safetensors", ".pt", ".npz"])
def test_missing_key_lists_available(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path, fmt, _tensors())
    with pytest.raises(ProbeError) as info:
        load_probe(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "'x', 'y'" in msg
    for key in ("inputs", "labels", "pad", "other"):
        assert repr(key) in msg


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not found"):
        load_probe(tmp_path / "none.pt")
    (tmp_path / "p.csv").write_text("1,2")
    with pytest.raises(ProbeError, match="unknown probe format"):
        load_probe(tmp_path / "p.csv")
    bad = _write(tmp_path, ".pt", {"x": torch.zeros(4, 2), "y": torch.zeros(3)})
    with pytest.raises(ProbeError, match="first axes"):
        load_probe(bad)
    m = _write(
        tmp_path, ".npz", {"x": torch.zeros(4, 2), "y": torch.zeros(4), "m": torch.full((4,), 0.5)}
    )
    with pytest.raises(ProbeError, match="boolean"):
        load_probe(m, mask="m")
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(ProbeError, match="dict of tensors"):
        load_probe(lst)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    with pytest.raises(ProbeError, match="cannot read probe"):
        load_probe(junk)


def test_int_mask_becomes_bool(tmp_path: Path) -> None:
    data = {"x": torch.zeros(3, 2), "y": torch.zeros(3), "m": torch.tensor([1, 0, 1])}
    probe = load_probe(_write(tmp_path, ".npz", data), mask="m")
    assert probe.mask is not None and probe.mask.tolist() == [True, False, True]


def test_iter_batches_cover_everything_once(tmp_path: Path) -> None:
    data = _tensors()
    probe = load_probe(_write(tmp_path, ".pt", data), inputs="inputs", targets="labels", mask="pad")
    batches = list(iter_batches(probe, 4))
    assert [b.size for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.x for b in batches]), data["inputs"])
    assert torch.equal(torch.cat([b.mask for b in batches]), data["pad"])
    with pytest.raises(ProbeError, match="at least 1"):
        list(iter_batches(probe, 0))


def test_source_batches(tmp_path: Path) -> None:
    (tmp_path / "src.py").write_text(
        "import torch\n"
        "def sized(batch_size):\n"
        "    for i in range(5):\n"
        "        yield torch.full((batch_size, 2), float(i)), torch.zeros(batch_size)\n"
        "def plain():\n"
        "    return [((torch.ones(3, 2), torch.ones(3, 1)), torch.zeros(3), torch.ones(3))]\n"
        "def wrong():\n"
        "    return [torch.zeros(3)]\n"
    )
    got = list(source_batches("src.py:sized", base_dir=tmp_path, batch_size=4, samples=10))
    assert [b.size for b in got] == [4, 4, 2]
    assert got[-1].x[:, 0].tolist() == [2.0, 2.0]
    (one,) = source_batches("src.py:plain", base_dir=tmp_path, batch_size=8)
    assert isinstance(one.x, tuple) and one.mask is not None and one.mask.dtype == torch.bool
    with pytest.raises(ProbeError, match=r"expected \(x, y\)"):
        list(source_batches("src.py:wrong", base_dir=tmp_path))
    with pytest.raises(ProbeError, match="no attribute"):
        list(source_batches("src.py:missing", base_dir=tmp_path))
    assert isinstance(got[0], Batch)


# --------------------------------------------------------------------------- losses
def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, dtype=DT)
    return {
        "cross_entropy": (logits, torch.randint(0, 5, (6,), generator=g)),
        "nll": (F.log_softmax(logits, -1), torch.randint(0, 5, (6,), generator=g)),
        "mse": (torch.randn(6, 3, generator=g, dtype=DT), torch.randn(6, 3, generator=g)),
        "l1": (torch.randn(6, 1, generator=g, dtype=DT), torch.randn(6, generator=g)),
        "huber": (3 * torch.randn(6, 2, generator=g, dtype=DT), torch.randn(6, 2, generator=g)),
        "bce": (torch.randn(6, 2, generator=g, dtype=DT), torch.randint(0, 2, (6, 2), generator=g)),
        "causal_lm": (torch.randn(6, 4, 5, generator=g, dtype=DT),
                      torch.randint(0, 5, (6, 4), generator=g)),
        "masked_lm": (torch.randn(6, 4, 5, generator=g, dtype=DT),
                      torch.randint(0, 5, (6, 4), generator=g)),
    }


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_sums_of_per_sample_losses(name: str) -> None:
    out, tgt = _cases()[name]
    fn = resolve_loss(name)
    total = fn(out, tgt)
    per_sample = torch.stack([fn(out[i : i + 1], tgt[i : i + 1]) for i in range(6)])
    assert total.shape == () and torch.allclose(total, per_sample.sum(), atol=1e-12)
    means = {
        "cross_entropy": lambda: F.cross_entropy(out, tgt),
        "nll": lambda: F.nll_loss(out, tgt),
        "mse": lambda: F.mse_loss(out, tgt.to(DT)),
        "l1": lambda: F.l1_loss(out, tgt.to(DT).reshape(out.shape)),
        "huber": lambda: F.huber_loss(out, tgt.to(DT)),
        "bce": lambda: F.binary_cross_entropy_with_logits(out, tgt.to(DT)),
        "causal_lm": lambda: F.cross_entropy(out[:, :-1].reshape(-1, 5), tgt[:, 1:].reshape(-1)),
        "masked_lm": lambda: F.cross_entropy(out.reshape(-1, 5), tgt.reshape(-1)),
    }
    mean = means[name]()
    terms = {"cross_entropy": out.shape[0], "nll": out.shape[0], "causal_lm": 6 * 3,
             "masked_lm": 6 * 4}.get(name, out.numel())
    assert torch.allclose(total, mean * terms, atol=1e-12)


def test_token_cross_entropy_flattens_and_ignores() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 7, generator=g, dtype=DT)
    target = torch.randint(0, 7, (3, 4), generator=g)
    target[0, 1] = target[2, 3] = -100
    got = resolve_loss("cross_entropy")(logits, target)
    keep = target != -100
    want = -F.log_softmax(logits, -1)[keep].gather(1, target[keep][:, None]).sum()
    assert torch.allclose(got, want, atol=1e-12)
    # class axis 1 (image segmentation layout) and float class indices still work
    seg = torch.randn(2, 3, 4, 5, generator=g, dtype=DT)
    lab = torch.randint(0, 3, (2, 4, 5), generator=g)
    assert torch.allclose(
        resolve_loss("cross_entropy")(seg, lab), F.cross_entropy(seg, lab, reduction="sum")
    )
    assert torch.allclose(
        resolve_loss("cross_entropy")(logits, target.clamp_min(0).to(DT)),
        F.cross_entropy(logits.reshape(-1, 7), target.clamp_min(0).reshape(-1), reduction="sum"),
    )


def test_user_loss_and_errors(tmp_path: Path) -> None:
    (tmp_path / "losses.py").write_text(
        "def sq(out, y):\n    return ((out - y) ** 2).sum()\nnot_callable = 3\n"
    )
    fn = resolve_loss("losses.py:sq", base_dir=tmp_path)
    assert float(fn(torch.ones(2), torch.zeros(2))) == 2.0
    with pytest.raises(ProbeError, match="unknown loss 'hinge'"):
        resolve_loss("hinge")
    with pytest.raises(ProbeError, match="not callable"):
        resolve_loss("losses.py:not_callable", base_dir=tmp_path)
    with pytest.raises(ProbeError, match="no such Python file"):
        resolve_loss("nope.py:f", base_dir=tmp_path)


# --------------------------------------------------------------------------- beside
def _run(folder: Path, probe: str | None, *, hf: bool = False) -> list[Path]:
    """Two checkpoints (files, or checkpoint-N/ folders) and maybe a probe file."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {"fc.weight": torch.zeros(2, 3)}
    for step in (100, 200):
        if hf:
            (folder / f"checkpoint-{step}").mkdir()
            save_file(sd, str(folder / f"checkpoint-{step}" / "model.safetensors"))
        else:
            save_file(sd, str(folder / f"step_{step}.safetensors"))
    if probe is not None:
        save_file({"x": torch.zeros(4, 3), "y": torch.zeros(4)}, str(folder / probe))
    return [c.path for c in ck.discover([folder])]


@pytest.mark.parametrize("name", PROBE_FILES)
def test_probe_beside_the_checkpoints_is_found_and_never_a_checkpoint(
    tmp_path: Path, name: str
) -> None:
    paths = _run(tmp_path / "run", name)
    assert [p.name for p in paths] == ["step_100.safetensors", "step_200.safetensors"]
    assert probe_beside(paths) == tmp_path / "run" / name


def test_probe_beside_checkpoint_folders_is_in_their_parent(tmp_path: Path) -> None:
    paths = _run(tmp_path / "run", "probe.safetensors", hf=True)
    assert [p.name for p in paths] == ["checkpoint-100", "checkpoint-200"]
    assert probe_beside(paths) == tmp_path / "run" / "probe.safetensors"
    assert probe_beside(paths[:1]) == tmp_path / "run" / "probe.safetensors"
    index = paths[0] / "model.safetensors"  # a file inside checkpoint-N/ given directly
    assert probe_beside([index]) == tmp_path / "run" / "probe.safetensors"
    save_file({"x": torch.zeros(1)}, str(paths[0] / "probe.safetensors"))  # closest wins
    assert probe_beside(paths[:1]) == paths[0] / "probe.safetensors"


def test_no_probe_beside_and_ambiguous_ones(tmp_path: Path) -> None:
    assert probe_beside(_run(tmp_path / "none", None)) is None
    assert probe_beside([]) is None
    # a plain folder's parent is not searched (only checkpoint-N/ folders look up)
    nested = _run(tmp_path / "outer" / "inner", None)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "outer" / "probe.safetensors"))
    assert probe_beside(nested) is None
    two = _run(tmp_path / "two", "probe.safetensors")
    np.savez(tmp_path / "two" / "probe.npz", x=np.zeros(1))
    with pytest.raises(ProbeError, match=r"several probe files .*probe\.safetensors, probe\.npz"):
        probe_beside(two)
    a = _run(tmp_path / "a", "probe.pt")
    b = _run(tmp_path / "b", "probe.pt")
    with pytest.raises(ProbeError, match="different probe files"):
        probe_beside(a + b)
    assert probe_beside(a + _run(tmp_path / "c", None)) == tmp_path / "a" / "probe.pt"
