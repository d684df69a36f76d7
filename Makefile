# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DB     ?= sqlite:///$(CURDIR)/var/dynroute.db
LISTEN ?= 127.0.0.1:8084
WEB    ?= 127.0.0.1:8085
# The admin page's first token, made once by `make run` and kept here so every run can show it again.
TOKEN_FILE ?= var/web-token
TOKEN_NAME  = make-run

.PHONY: run test lint install clean

$(BIN)/fs-dynroute: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,mysql,postgresql]'
	touch $@

install: $(BIN)/fs-dynroute

# Printed by `make run` once the server is listening: a newcomer's first calls, without FreeSWITCH.
SERVER_OPTION = $(if $(filter 127.0.0.1:8084,$(LISTEN)),, --server $(LISTEN))
define NEXT_STEPS

fs_dynroute is serving the demo rule on $(LISTEN) (database $(DB)); Ctrl-C stops it.
Place calls as FreeSWITCH would, in another terminal:

  cd $(CURDIR) && . $(BIN)/activate && export DYNROUTE_DB='$(DB)'
  fs-dynroute call --to 5550100 --from '+1 555 111 1111'$(SERVER_OPTION)    # a known caller: routed to 1001
  fs-dynroute call --to 5550100 --from '+1 555 999 9999'$(SERVER_OPTION)    # an unknown one: No Match, 5000
  fs-dynroute lookup --source 5550100 '+1 555 222 2222'     # the decision alone, without a call

endef
export NEXT_STEPS

# A token named $(TOKEN_NAME) is added only when the database has none by that name; its secret goes to TOKEN_FILE.
HAS_TOKEN = $(BIN)/python -c 'import json, sys; sys.exit(all(t["name"] != "$(TOKEN_NAME)" for t in json.load(sys.stdin)))'
LOST_TOKEN = (not shown: $(TOKEN_FILE) is gone; run fs-dynroute token revoke $(TOKEN_NAME), then make run again)

# The server's log goes through a loop that prints NEXT_STEPS after "listening on" and ignores Ctrl-C, so the
# server's own shutdown lines still show; the loop fails the target when the server never listened.
run: SERVE = $(BIN)/fs-dynroute serve --db '$(DB)' --listen $(LISTEN) --web $(WEB)
run: install
	$(BIN)/fs-dynroute initdb --db '$(DB)' --demo
	@$(BIN)/fs-dynroute token list --json --db '$(DB)' | $(HAS_TOKEN) || { mkdir -p $(dir $(TOKEN_FILE)) && \
	    (umask 077 && $(BIN)/fs-dynroute token add $(TOKEN_NAME) --db '$(DB)' >$(TOKEN_FILE)); }
	@echo "$(SERVE)"
	@token=$$(cat $(TOKEN_FILE) 2>/dev/null) || token='$(LOST_TOKEN)'; \
	$(SERVE) 2>&1 | (trap '' INT; listening=; \
	    while IFS= read -r line; do printf '%s\n' "$$line"; case "$$line" in \
	        *" listening on "*) listening=yes; printf '%s\n' "$$NEXT_STEPS" \
	            "Admin page: http://$(WEB)/ (token in $(TOKEN_FILE): $$token)" "";; esac; done; test -n "$$listening")

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var build *.egg-info

# The missed-call loop of "Callbacks that keep themselves", with the fake FreeSWITCH on both sockets.
.PHONY: demo-callback
demo-callback: install
	$(BIN)/python -m fs_dynroute.fakeswitch.callback_demo
