"""Ground truth for the activation formulas: reference PyTorch models whose saved-for-backward
tensors are counted, byte for byte. Needs the `validate` extra (torch==2.13.0)."""
