"""Property-based fuzzing of the loaders: random bytes and mutated valid files never raise
anything but the clean one-line error (CheckpointError / ProbeError)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from symtool.errors import CheckpointError, ProbeError
from symtool.inputs import checkpoints as ck
from symtool.inputs.probes import load_probe

_SD = {"fc.weight": torch.arange(12.0).reshape(3, 4), "fc.bias": torch.ones(3)}
_SAFETENSORS = save(_SD)
_buf = io.BytesIO()
torch.save(_SD, _buf)
_PT = _buf.getvalue()

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"step_1{suffix}"
        path.write_bytes(data)
        try:
            loaded = ck.load(ck.discover([path])[0])
        except CheckpointError as exc:
            text = str(exc)
            assert str(path) in text and "\n" not in text
            return
        # whatever loads must be a real state dict of tensors
        assert loaded.tensors and all(isinstance(v, torch.Tensor) for v in loaded.tensors.values())


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    raw = bytearray(data)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    return bytes(raw[:cut] if cut is not None else raw)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([".safetensors", ".pt", ".ckpt", ".bin"]))
def test_random_bytes_give_the_clean_error(data: bytes, suffix: str) -> None:
    _load(data, suffix)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, len(_SAFETENSORS))),
)
def test_mutated_safetensors_give_the_clean_error(edits, cut) -> None:
    _load(_mutate(_SAFETENSORS, edits, cut), ".safetensors")


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, len(_PT))),
)
def test_mutated_torch_files_give_the_clean_error(edits, cut) -> None:
    _load(_mutate(_PT, edits, cut), ".pt")


@FUZZ
@given(st.binary(max_size=1024), st.sampled_from([".safetensors", ".pt", ".npz"]))
def test_random_probe_files_give_the_clean_error(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"probe{suffix}"
        path.write_bytes(data)
        try:
            load_probe(path)
        except ProbeError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
