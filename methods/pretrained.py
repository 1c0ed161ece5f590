"""Pretrained weights for the feed-forward methods: the file format, exporting a training run, and warm starts.

A pretrained file (``models/pretrained/<method>.pt``, written by ``nst pretrained``) holds the weights of a method's
trainable modules in fp16 (no optimiser state, no discriminator: a fine-tune gets a fresh adversary and fresh Adam
moments), the identity of the encoder they were trained on, the shape of every tensor, and the model card (data,
schedule, hardware, wall time, final losses, git sha). ``<method>.md`` beside it is the same card for people.

``warm_start`` loads such a file into a freshly built model before training (``methods.<m>.train.init_from``).
Compatibility is judged on what decides whether the weights fit and mean the same thing — the method, the tensors'
names and shapes (the architecture), and the encoder's identity (weights, pooling and normalisation,
``VGGEncoder.weights_sha256``) — not on the code fingerprint, so a code change that keeps the network still
warm-starts. Anything else is one :class:`PretrainedError` naming the file and the first differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.errors import NstError
from methods.utils import load_torch, save_torch_atomic

FORMAT = "nst-bench-pretrained/1"


class PretrainedError(NstError):
    """A pretrained file that is missing, unreadable or does not fit the model it should initialise."""


def architecture(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, list[int]]]:
    """Every tensor of every module's state_dict with its shape: what a warm start must match."""
    return {name: {k: list(v.shape) for k, v in m.state_dict().items()} for name, m in modules.items()}


def _differences(want: Mapping[str, Mapping[str, list[int]]], have: Mapping[str, Mapping[str, list[int]]]) -> list[str]:
    out: list[str] = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            out.append(f"module {name!r} missing from the file")
            continue
        if name not in want:
            out.append(f"module {name!r} in the file is not part of this model")
            continue
        for key in sorted(set(want[name]) | set(have[name])):
            a, b = want[name].get(key), have[name].get(key)
            if a != b:
                out.append(f"{name}.{key}: model {a or 'absent'}, file {b or 'absent'}")
    return out


def export(
    method: str,
    modules: Mapping[str, nn.Module],
    encoder_sha256: str,
    checkpoint: Mapping[str, Any],
    out: Path,
    card: Mapping[str, Any],
) -> Path:
    """Write the ``modules``' weights as stored in a training ``checkpoint`` to ``out`` in fp16, with ``card``.

    ``modules`` (a freshly built model's trainable modules) names what to keep and checks that the checkpoint's
    tensors fit them; the checkpoint's other modules (a discriminator) are left out.
    """
    stored = checkpoint.get("modules", {})
    missing = [n for n in modules if n not in stored]
    if missing:
        raise PretrainedError(f"the checkpoint lacks {', '.join(missing)}: it was not written by {method}'s training")
    weights = {n: {k: v.half() if v.is_floating_point() else v for k, v in stored[n].items()} for n in modules}
    shapes = {n: {k: list(v.shape) for k, v in w.items()} for n, w in weights.items()}
    diff = _differences(architecture(modules), shapes)
    if diff:
        raise PretrainedError(f"the checkpoint does not fit {method}: " + "; ".join(diff[:5]))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(
        {
            "format": FORMAT,
            "method": method,
            "encoder_sha256": encoder_sha256,
            "architecture": architecture(modules),
            "modules": weights,
            "card": dict(card),
        },
        out,
    )
    return out


def read(path: Path) -> dict[str, Any]:
    """A pretrained file's contents; one clear error when it is missing, unreadable or of another format."""
    state = load_torch(
        path,
        PretrainedError,
        f"{path}: no pretrained model (make pretrain writes it; or set train.init_from: null)",
        f"{path}: not a readable pretrained model",
    )
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise PretrainedError(
            f"{path}: not a pretrained model file (format {found!r}, expected {FORMAT!r}; a "
            "training checkpoint or model file must first go through `nst pretrained`)"
        )
    return state


def warm_start(method: str, modules: Mapping[str, nn.Module], encoder_sha256: str, path: Path) -> dict[str, Any]:
    """Load the pretrained file at ``path`` into ``modules`` (cast to their dtype); returns its card.

    Raises:
        PretrainedError: the file is missing or unreadable, or it was trained for another method, on another encoder,
            or with another architecture (the first differing tensors are named).
    """
    state = read(path)
    if state.get("method") != method:
        raise PretrainedError(f"{path}: pretrained for {state.get('method')!r}, not for {method!r}")
    if state.get("encoder_sha256") != encoder_sha256:
        raise PretrainedError(
            f"{path}: trained on the encoder {str(state.get('encoder_sha256'))[:12]}, not on the one in use "
            f"({encoder_sha256[:12]}): encoder.weights, encoder.pool and methods.{method}.encoder_normalise must be "
            "those it was pretrained with (its card says which), or set train.init_from: null"
        )
    diff = _differences(architecture(modules), state.get("architecture", {}))
    if diff:
        raise PretrainedError(
            f"{path}: another architecture than {method}'s: "
            + "; ".join(diff[:5])
            + (f" (and {len(diff) - 5} more)" if len(diff) > 5 else "")
        )
    with torch.no_grad():
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])  # copy_ casts fp16 to the parameters' dtype
    return dict(state.get("card", {}))


def card_markdown(card: Mapping[str, Any]) -> str:
    """The model card for people: the same facts as the file's ``card``."""
    sched = card.get("schedule", {})
    ref = card.get("reference_schedule", {})
    data = card.get("data", {})
    losses = card.get("final_losses", {})
    enc = card.get("encoder", {})
    method = card.get("method")
    lines = [
        f"# Pretrained {method} (nst-bench)",
        "",
        f"`{card.get('file')}`: the weights of {', '.join(card.get('modules', []))} in fp16 "
        f"({card.get('parameters', 0):,} parameters), for warm starts (`methods.{method}.train.init_from`).",
        "Trained by this project with its own code, not by the method's authors.",
        "",
        "| | |",
        "|---|---|",
        f"| iterations | {card.get('iterations')} (reference schedule: {ref.get('iterations')}, {ref.get('source')}) |",
        f"| batch / crop / resize_short | {sched.get('batch_size')} / {sched.get('crop')} px / "
        f"{sched.get('resize_short')} px |",
        f"| optimiser | Adam, lr {sched.get('lr')}, inverse-time decay {sched.get('lr_decay')} |",
        f"| precision | {card.get('precision')} |",
        f"| hardware | {card.get('hardware')} |",
        f"| wall time | {card.get('wall_time_s', 0) / 60:.1f} min |",
        f"| final losses (last iteration) | {', '.join(f'{k} {v:.4g}' for k, v in losses.items())} |",
        f"| encoder | {enc.get('weights')} VGG-19, normalise {enc.get('normalise')}, pool {enc.get('pool')}, "
        f"sha256 {str(enc.get('sha256'))[:16]}… |",
        f"| code | git {card.get('git_sha')} |",
        f"| written | {card.get('created')} from `{card.get('checkpoint')}` |",
        "",
        "## Training data (the embedded sample's train split; never val or test)",
        "",
        "| role | image | sha256 |",
        "|---|---|---|",
        *[f"| {role} | {d['id']} | {d['sha256'][:16]}… |" for role in ("content", "style") for d in data.get(role, [])],
        "",
        "Licences of the images: data/sample/*/ATTRIBUTION.md.",
        "",
    ]
    return "\n".join(lines)
