# Two commands do everything on a fresh Debian machine (as root or with sudo):
#   make run   — set up, then start the embedded stack (Ctrl-C stops it)
#   make test  — set up, then run the linter, the type checker (mypy over shared/) and the whole test suite
.PHONY: bootstrap run test lint typecheck unit clean bench-deps

VENV := .venv

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	$(VENV)/bin/cse dev up $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .

# Configured in pyproject.toml ([tool.mypy]: which files, how strict).
typecheck: bootstrap
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(ARGS)

unit: bootstrap
	$(VENV)/bin/pytest tests/unit $(ARGS)

# The libraries `cse bench allocate` compares against (benchmark only, not runtime dependencies).
bench-deps: bootstrap
	$(VENV)/bin/pip install -e '.[bench]'

clean:
	rm -rf .run .pytest_cache .ruff_cache .mypy_cache
