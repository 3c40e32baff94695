.PHONY: run test lint format bootstrap

# Runs the service on SQLite with the fake provider; Ctrl-C stops everything.
run:
	@scripts/bootstrap.sh
	@scripts/run.sh

# Runs the whole test suite (SQLite, or DATABASE_URL=mysql://… through the pooled backend).
test:
	@scripts/bootstrap.sh --dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
