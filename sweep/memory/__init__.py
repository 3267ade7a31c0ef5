"""Memory formulas: parameter shards, model states per framework profile, and the total."""
