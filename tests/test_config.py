"""symtool.toml: lookup beside checkpoints, validation, CLI-over-file precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from symtool.config import RunConfig, find_config, load_config, pick
from symtool.errors import ConfigError


def test_found_beside_a_directory_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "symtool.toml").write_text('[data]\npath = "probe.safetensors"\n')
    (tmp_path / "step_1.safetensors").write_bytes(b"")
    for arg in (tmp_path, tmp_path / "step_1.safetensors"):
        cfg = find_config([arg])
        assert cfg.path == tmp_path / "symtool.toml"
        assert cfg.path_value("data", "path") == tmp_path / "probe.safetensors"


def test_hf_checkpoint_folder_looks_in_parent(tmp_path: Path) -> None:
    (tmp_path / "symtool.toml").write_text('[align]\nloss = "mse"\n')
    d = tmp_path / "checkpoint-100"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    assert find_config([d]).get("align", "loss") == "mse"


def test_no_config_is_empty(tmp_path: Path) -> None:
    cfg = find_config([tmp_path])
    assert cfg.path is None and cfg.get("align", "loss", "x") == "x"


def test_cli_overrides_file_overrides_default(tmp_path: Path) -> None:
    f = tmp_path / "symtool.toml"
    f.write_text("[align]\nnull_samples = 4\n")
    cfg = load_config(f)
    assert pick(None, cfg, "align", "null_samples", 16) == 4
    assert pick(32, cfg, "align", "null_samples", 16) == 32
    assert pick(None, RunConfig(), "align", "null_samples", 16) == 16


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[aling]\nloss='mse'\n", "unknown section [aling]"),
        ("[align]\nlos='mse'\n", "unknown key align.los"),
        ("[align]\nnull_samples='many'\n", "align.null_samples must be an integer"),
        ("[align]\nverify=1\n", "align.verify must be true/false"),
        ("[align\n", "invalid TOML"),
        ("[align]\nmoments='weird'\n", "align.moments must be paper or raw, got 'weird'"),
        ("[align]\nmetric='l2'\n", "align.metric must be pearson or cosine"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "symtool.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert needle in str(info.value) and str(f) in str(info.value)


def test_model_args_parse_toml_scalars_over_the_file() -> None:
    from symtool.cli.common import parse_model_args as _model_args

    cfg = RunConfig(values={"model": {"args": {"depth": 2, "act": "relu"}}})
    got = _model_args(["depth=3", "lr=1e-3", "name=abc", "flag=true"], cfg)
    assert got == {"depth": 3, "act": "relu", "lr": 1e-3, "name": "abc", "flag": True}
