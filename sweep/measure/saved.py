"""Count the bytes autograd saves for backward, deduplicated by storage."""

from __future__ import annotations

import torch


def saved_tensor_bytes(forward, *inputs, exclude=(), held=lambda: ()) -> int:
    """Bytes of the distinct storages saved for backward while `forward(*inputs)` runs.

    Uses `torch.autograd.graph.saved_tensors_hooks`: every tensor an operation saves passes
    through the pack hook; views of one storage count once, as the whole storage. Storages of
    `exclude` (the parameters, counted as weights elsewhere) are left out. `held()` names
    tensors kept alive for backward outside the hooks: the constant (no-grad) inputs that
    `torch.utils.checkpoint` keeps to recompute from.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in excluded:
            storages[key] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        # Keep the output (and through its graph every saved tensor) alive while counting, so
        # that no saved storage is freed and its address reused by a later one.
        output = forward(*inputs)
    for tensor in held():
        pack(tensor)
    total = sum(storages.values())
    del output
    return total
