"""Benchmark harness for approval-gateway (issue 5). Entry point: bench/run."""
