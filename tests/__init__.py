"""The test suite: unit/ (nothing running) and integration/ (real processes), each mirroring
the packages it tests (shared/, workers/, tooling/); deploy/ and monitoring/ check the
infrastructure files."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
