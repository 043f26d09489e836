# foldserve: `make run` serves the default model (training it first if absent); `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
MODEL_DIR ?= models/default
MODEL := $(MODEL_DIR)/model.onnx
ARCH ?= mlp
export ORT_DISABLE_TELEMETRY := 1

.PHONY: run test lint format proto proto-check venv model docs clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

$(MODEL): | venv
	$(BIN)/foldserve train --data digits --arch $(ARCH) --out $(MODEL_DIR)

model: $(MODEL)

run: venv $(MODEL)
	$(BIN)/foldserve serve --model $(MODEL)

test: venv proto-check lint docs
	$(BIN)/pytest -q -rs

# The docs site (mkdocs.yml) into build/site; --strict: a broken link or anchor, or a page left out
# of the nav, fails the build. (The variable silences Material's notice about MkDocs 2.)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Generated stubs are committed; `proto-check` fails when regenerating them would change anything.
PROTOS := $(shell find proto -name '*.proto' | sort)
proto: venv
	rm -rf service/_proto/foldserve service/_proto/inference
	$(PY) -m grpc_tools.protoc -I proto --python_out=service/_proto --pyi_out=service/_proto \
		--grpc_python_out=service/_proto $(PROTOS)
	# protoc writes imports relative to proto/; make them absolute inside our package.
	sed -i -E 's/^from (foldserve\.v1|inference) import/from foldserve._proto.\1 import/' $$(find service/_proto -name '*.py' -o -name '*.pyi')
	touch service/_proto/foldserve/__init__.py service/_proto/foldserve/v1/__init__.py service/_proto/inference/__init__.py

proto-check: proto
	git diff --exit-code --stat -- service/_proto || { echo "service/_proto is stale: run make proto and commit"; exit 1; }
	test -z "$$(git status --porcelain -- service/_proto)" || { git status --porcelain -- service/_proto; echo "service/_proto has untracked files: run make proto and commit"; exit 1; }

clean:
	rm -rf $(VENV) models build *.egg-info
