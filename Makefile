# Two commands do everything on a fresh Debian machine (as root or with sudo):
#   make run   — set up, then start the embedded stack (Ctrl-C stops it)
#   make test  — set up, then run the linter, the type checker (mypy over shared/) and the whole test suite,
#                the Swarm test included (make test-swarm runs it alone)
.PHONY: bootstrap run test test-swarm lint typecheck unit clean bench-deps

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

# The Swarm test runs in a second pytest beside the rest (scripts/test.sh); ARGS runs one plain pytest.
test: lint typecheck
	@scripts/test.sh $(ARGS)

# The production stack on a four-node Swarm of local Docker engines (tests/swarm; needs root).
test-swarm: bootstrap
	$(VENV)/bin/pytest tests/swarm $(ARGS)

unit: bootstrap
	$(VENV)/bin/pytest tests/unit $(ARGS)

# The libraries `cse bench allocate` compares against (benchmark only, not runtime dependencies).
bench-deps: bootstrap
	$(VENV)/bin/pip install -e '.[bench]'

clean:
	rm -rf .run .pytest_cache .ruff_cache .mypy_cache
