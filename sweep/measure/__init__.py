"""Ground truth for the memory formulas: reference PyTorch models whose saved-for-backward
tensors are counted, byte for byte (`cases`), and whole training steps at real sizes tracked by
PyTorch's own memory trackers (`step`). Needs the `validate` extra (torch==2.13.0)."""
