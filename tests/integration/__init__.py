"""Integration tests: the provider over real HTTP against the gateway simulator, and real DAG runs."""
