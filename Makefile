# Fresh-machine entry points (see README): `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not gpu and not slow"

.PHONY: setup run test bench clean-artifacts

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,export,dev]'
	touch $@

run: setup
	@$(VENV)/bin/sarde run

test: setup
	bash .ci/install-rtsp.sh
	$(PY) -m pytest $(PYTEST_ARGS)

clean-artifacts:
	rm -rf artifacts
