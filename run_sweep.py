#!/usr/bin/env python3
"""GPU memory of LLM training for every configuration (the same as the `llm-memory-sweep`
console script). See README.md."""

from sweep.cli import entry

if __name__ == "__main__":
    entry()
