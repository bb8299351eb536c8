"""The embedded stack: every process on one machine, no Docker."""
