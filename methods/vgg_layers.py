"""VGG-19's layer names and widths, torch-free (validating params.yaml needs the names, not the network)."""

from __future__ import annotations

# VGG-19 ("E" in Simonyan & Zisserman 2015, table 1): conv layers per block and their widths.
_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)


def _architecture() -> list[tuple[str, str, int, int]]:
    """(name, kind, in_channels, out_channels) for every layer, in forward order."""
    layers: list[tuple[str, str, int, int]] = []
    in_ch = 3
    for b, (n_conv, width) in enumerate(zip(_BLOCKS, _WIDTHS, strict=True), start=1):
        for i in range(1, n_conv + 1):
            layers.append((f"conv{b}_{i}", "conv", in_ch, width))
            layers.append((f"relu{b}_{i}", "relu", width, width))
            in_ch = width
        layers.append((f"pool{b}", "pool", width, width))
    return layers


ARCHITECTURE = _architecture()
LAYER_NAMES: tuple[str, ...] = tuple(name for name, *_ in ARCHITECTURE)
CONV_NAMES: tuple[str, ...] = tuple(name for name, kind, *_ in ARCHITECTURE if kind == "conv")
