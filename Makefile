.PHONY: run test lint format bootstrap bench fuzz

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

# Benchmarks against MariaDB-backed gunicorn (MariaDB at 127.0.0.1:3306, root, no password);
# writes bench/results/latest.md. QUICK=1: short scenarios, one run.
bench:
	@scripts/bootstrap.sh
	.venv/bin/python -m bench.run $(if $(QUICK),--quick)

# Fuzzes the API against its OpenAPI schema for longer than the test suite does.
fuzz:
	@scripts/bootstrap.sh --dev
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-300} DB_TEST_NAME=$${DB_TEST_NAME:-test_fuzz} \
		.venv/bin/python -m pytest tests/test_fuzz_api.py $(PYTEST_ARGS)
