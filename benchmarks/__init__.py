"""Benchmarks of the orchestrator (plain importable modules, no test framework)."""
