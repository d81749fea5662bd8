"""Progress inside a checkpoint (issue 15): each pass, batch and layer is reported, under
the checkpoint it belongs to."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from symtool.align.moments import layer_bytes
from symtool.align.run import AlignSettings, run_align
from symtool.inputs import checkpoints as ck

SIZES = [(6, 10), (10, 8), (8, 3)]


def _run_dir(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    layers: list[torch.nn.Module] = []
    for d_in, d_out in SIZES:
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    for step in (0, 10):
        save_file(dict(net.state_dict()), str(tmp_path / f"step_{step:06d}.safetensors"))
    save_file(
        {"x": torch.randn(50, 6, generator=g), "y": torch.randint(0, 3, (50,), generator=g)},
        str(tmp_path / "probe.safetensors"),
    )
    return tmp_path


def test_progress_names_passes_batches_and_layers(tmp_path: Path) -> None:
    folder = _run_dir(tmp_path)
    ckpts = ck.discover([str(folder)], exclude=[folder / "probe.safetensors"])
    budget = (layer_bytes(6, 10) + layer_bytes(10, 8)) / 2**30  # two passes: 2 layers, 1
    settings = AlignSettings(
        data=folder / "probe.safetensors", activation="tanh", batch_size=16, null_samples=2,
        bootstrap=0, max_memory=budget,
    )
    calls: list[tuple[int, int, str]] = []
    report = run_align(ckpts, settings, progress=lambda i, n, name: calls.append((i, n, name)))
    assert report["checkpoints"][0]["passes"] == 2
    first = [name for i, n, name in calls if i == 0 and n == 2]
    assert first[0] == ckpts[0].name
    c0 = ckpts[0].name
    expected = [c0]
    for p, group in ((1, ["0", "2"]), (2, ["4"])):
        span = group[0] if len(group) == 1 else f"{group[0]} … {group[-1]}"
        expected += [f"{c0}: pass {p}/2: capture {span}, batch {b}/4" for b in (1, 2, 3, 4)]
        for k, name in enumerate(group):
            d_in, d_out = SIZES[int(name) // 2]
            expected.append(f"{c0}: pass {p}/2: layer {k + 1}/{len(group)} {name} ({d_out}×{d_in})")
    assert first == expected
    assert calls[-1] == (2, 2, "")
    assert any(i == 1 and name.startswith(ckpts[1].name + ": ") for i, _, name in calls)
