# pi-opt: everything installs into .venv from scratch (torch 2.13.0 CPU from the local wheel).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo optimize typecheck test test-fast bench-fronts bench-mpc bench-service openapi clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[report,service,mpc,test]"
	# crypten 0.4.1's metadata requires the dead 'sklearn' package: install it without deps.
	$(PIP) install -q --no-deps crypten==0.4.1
	$(PY) -c "import mpc._compat as c; c.import_crypten(); print('crypten ok')"
	touch $@

# README command 1: start the service, submit a digits job over HTTP, follow it,
# download the reports and run the encrypted-inference demo on the best point.
demo: install
	$(PY) -m service.demo_client

# The same search without the service (CLI, progress bar).
optimize: install
	$(PY) -m pi_opt_cli optimize --config configs/digits_quick.yaml --workdir runs/digits_quick

# Static types of the library (config in pyproject.toml [tool.mypy]); CI runs it first.
typecheck: install
	$(PY) -m mypy

# README command 2.
test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not mpc and not postgres"

bench-fronts: install
	$(PY) bench/run_fronts.py --config configs/digits_bench.yaml --out bench/results/fronts

bench-mpc: install
	$(PY) bench/mpc_relu_scaling.py && $(PY) bench/mpc_circa.py

bench-service: install
	$(PY) bench/service_load.py

openapi: install
	$(PY) -m service openapi --write

clean:
	rm -rf runs .pytest_cache

# Build the service image and run the compose stack with podman (api + 2 workers + postgres):
# deploy/check.sh, root, minutes; not part of `make test`. See deploy/README.md.
.PHONY: image-check
image-check:
	deploy/check.sh
