# Every target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench run clean system-deps screenshot

# Debian packages the tests use: Chromium for the dashboard tests (driven through Playwright,
# no browser download), HAProxy for the many-instances tests, Prometheus (promtool and a real
# server scraping a proxy) for the shipped alert rules and Grafana board, a font for readable
# screenshots, etcd-server (a 3-member etcd cluster on loopback) for the multi-instance farm tests,
# NUT (upsd with the dummy-ups driver, upsc) for the power-aware backfill tests.
SYSTEM_DEPS := chromium chromium-driver haproxy prometheus etcd-server fonts-dejavu-core nut-server nut-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(PY) -m proxy demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(TEST_ARGS)

# Install what is missing. If that fails the suite still runs and the tests that need a
# package fail saying which one (they never skip). The tests run their own Prometheus, etcd
# and upsd on loopback; the services the Debian packages enable (Prometheus on all interfaces,
# etcd, upsd, upsmon) are stopped and disabled when this target installed the package
# (.ci/quiet-services; an operator's own, installed before, are left alone).
system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages for the tests:" $$missing; \
	  { $(SUDO) apt-get update -q && \
	    $(SUDO) apt-get install -y --no-install-recommends $$missing; } || \
	  echo "WARNING: could not install $$missing; the tests that need them will fail"; \
	  $(SUDO) sh .ci/quiet-services $$missing; fi

# the README's picture of the dashboard during a failover, as the dashboard test takes it
screenshot: $(STAMP) system-deps
	$(PY) -m pytest -q tests/dashboard/test_dashboard.py -k killing_the_primary
	mkdir -p docs && cp tests/dashboard/artifacts/dashboard-after-failover-1440x900.png docs/dashboard-failover.png

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

run: $(STAMP)
	$(PY) -m proxy run -c $(or $(CONFIG),configs/example.toml)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
