"""Benchmarks of the model package: `step` (`parley bench model`), `llm` (`parley bench llm`)."""
