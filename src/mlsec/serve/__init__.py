"""Serve: a model server that verifies before it loads, and the deployment that runs it."""
