"""The key/value slots of the rows the prefix engine decodes (engine/models/inference/generation.py;
docs/architecture.md, "The generation path")."""

from __future__ import annotations

import torch

from engine.models.inference.flat_forward import PrefixKV

CAP_STEP = 256  # the key/value buffers grow by this many positions


class SlotKV:
    """Keys and values of the rows being decoded: one [slots, kv_heads, cap, head_dim] buffer per
    layer for each, row i in slot i (rows are kept dense: a leaving row's slot takes the last row)."""

    def __init__(self, n_layers: int, slots: int, n_kv: int, head_dim: int, dtype: torch.dtype):
        self.shape = (slots, n_kv, 0, head_dim)
        self.dtype = dtype
        self.keys = [torch.empty(self.shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.empty(self.shape, dtype=dtype) for _ in range(n_layers)]

    @property
    def cap(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, need: int) -> None:
        if need <= self.cap:
            return
        cap = -(-need // CAP_STEP) * CAP_STEP
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                # zeros, not empty: a shorter row's attention reads the positions past its length with
                # weight 0, and 0 x an uninitialized NaN is NaN (rows turned into special tokens)
                new = torch.zeros((old.shape[0], old.shape[1], cap, old.shape[3]), dtype=self.dtype)
                new[:, :, : old.shape[2]] = old
                buffers[i] = new

    def load(self, slot: int, prefix: PrefixKV, start: int, end: int) -> None:
        """Positions [start, end) of `prefix` into the slot's first end − start positions."""
        self.reserve(end - start)
        for layer in range(len(self.keys)):
            self.keys[layer][slot, :, : end - start] = prefix.keys[layer][:, start:end]
            self.values[layer][slot, :, : end - start] = prefix.values[layer][:, start:end]

    def move(self, src: int, dst: int, n: int) -> None:
        for buffers in (self.keys, self.values):
            for buf in buffers:
                buf[dst, :, :n] = buf[src, :, :n]

    def snapshot(self, slot: int, trunk: PrefixKV, tokens: tuple[int, ...]) -> PrefixKV:
        """The whole sequence `tokens`: the trunk's positions, then the slot's."""
        n = len(tokens) - len(trunk.tokens)
        return PrefixKV(tokens=tokens, keys=[torch.cat([t, k[slot, :, :n]], dim=1) for t, k in zip(trunk.keys, self.keys, strict=True)],
                        values=[torch.cat([t, v[slot, :, :n]], dim=1) for t, v in zip(trunk.values, self.values, strict=True)])
