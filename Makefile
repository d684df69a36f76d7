# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DB     ?= sqlite:///$(CURDIR)/var/dynroute.db
LISTEN ?= 127.0.0.1:8084

.PHONY: run test lint install clean

$(BIN)/fs-dynroute: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,mysql,postgresql]'
	touch $@

install: $(BIN)/fs-dynroute

run: install
	$(BIN)/fs-dynroute initdb --db '$(DB)' --demo
	$(BIN)/fs-dynroute serve --db '$(DB)' --listen $(LISTEN)

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var build *.egg-info
