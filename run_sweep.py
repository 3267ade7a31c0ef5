#!/usr/bin/env python3
"""GPU memory of LLM training for every configuration. See README.md."""

import os
import sys

# 512-bit vectors where the CPU has them (AVX-512): the sweep kernel ran 12% faster on this
# project's machines (bench/run_benchmark.py); a hint that changes nothing elsewhere.
# XLA reads its flags when JAX starts, so this precedes every import of jax.
if "xla_cpu_prefer_vector_width" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_prefer_vector_width=512"
    ).strip()

from sweep.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
