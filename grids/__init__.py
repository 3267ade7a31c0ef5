"""The grids that ship with llm-memory-sweep (installed as `sweep.grids`; see
`sweep.grid.shipped_grids`)."""
