"""Tooling beside the production code: nothing under ``workers/`` or ``shared/`` imports it."""
