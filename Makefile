.PHONY: run test screenshots lint format bootstrap bench fuzz soak lock

# Runs the service on SQLite with the fake provider; Ctrl-C stops everything.
run:
	@scripts/bootstrap.sh
	@scripts/run.sh

# Runs the whole test suite (SQLite, or DATABASE_URL=mysql://… through the pooled backend).
test:
	@scripts/bootstrap.sh --dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Regenerates README's screenshots (docs/screenshots/*.png) from the browser tests; `make test`
# writes them to a temporary directory instead.
screenshots:
	@scripts/bootstrap.sh --dev
	SCREENSHOT_DIR=$(CURDIR)/docs/screenshots DB_TEST_NAME=$${DB_TEST_NAME:-test_screenshots} \
		.venv/bin/python -m pytest tests/browser/test_pay_page.py tests/browser/test_admin_pages.py -q $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

# Benchmarks against MariaDB-backed gunicorn (MariaDB at 127.0.0.1:3306, root, no password);
# writes bench/results/latest.md. QUICK=1: short scenarios, one run.
bench:
	@scripts/bootstrap.sh
	.venv/bin/python -m bench.run $(if $(QUICK),--quick)

# Re-resolves requirements*.txt into the hashed locks that scripts/bootstrap.sh installs:
# PyPI only (the machine's pip configuration is not read), Python 3.11, current pins kept
# where they still fit; UPGRADE=1 takes the newest versions allowed.
LOCK_FLAGS = --no-config --index-url https://pypi.org/simple --python-version 3.11 --generate-hashes \
	--quiet --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock:
	@[ -x .venv/bin/python ] || python3 -m venv .venv
	@[ -x .venv/bin/uv ] || .venv/bin/pip install -q "$$(grep -m1 '^uv==' requirements-dev.txt)"
	.venv/bin/uv pip compile $(LOCK_FLAGS) requirements.txt -o requirements.lock
	.venv/bin/uv pip compile $(LOCK_FLAGS) --constraint requirements.lock requirements-dev.txt -o requirements-dev.lock

# Fuzzes the API against its OpenAPI schema for longer than the test suite does.
fuzz:
	@scripts/bootstrap.sh --dev
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-300} DB_TEST_NAME=$${DB_TEST_NAME:-test_fuzz} \
		.venv/bin/python -m pytest tests/payments/api/test_fuzz.py $(PYTEST_ARGS)

# The exactly-once model test (tests/payments/test_model.py: charges and refunds) for longer, with a random seed
# (MODEL_SEED=N repeats a run); prints the seed, steps, faults injected and violations.
soak:
	@scripts/bootstrap.sh --dev
	MODEL_SEED=$${MODEL_SEED:-$$(shuf -i 1-1000000000 -n 1)} MODEL_MAX_EXAMPLES=$${SOAK_EXAMPLES:-200} \
		MODEL_STEPS=$${SOAK_STEPS:-20} DB_TEST_NAME=$${DB_TEST_NAME:-test_soak} \
		.venv/bin/python -m pytest tests/payments/test_model.py -s -q $(PYTEST_ARGS)
