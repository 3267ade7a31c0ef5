#!/usr/bin/env python3
"""GPU memory of LLM training for every configuration. See README.md."""

import sys

from sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
