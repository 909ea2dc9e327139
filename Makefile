# Two commands do all set-up on a fresh machine:
#   make demo   runs the main job on the embedded default (Fashion-MNIST), from the shipped base model, in minutes
#   make test   runs the tests; the slow ones (torch.compile, two processes, a short study run) only in CI
#               (CI set, as CI services and .ci/run set it) or with `make test SLOW=1`
# Both create the virtual environment, install tnt and fetch Fashion-MNIST (Debian package) when missing.
#   make base   retrains the shipped base models from nothing (about 30 min each; `make -j2 base` runs both at once)
#               into $(BASE_INTO)/<bench>/ and prints each one's test accuracy against the shipped one.
#               `make base BASE_INTO=examples/fashion_mnist/base` replaces the shipped models.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TNT := $(VENV)/bin/tnt
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist
BASE_INTO ?= examples/fashion_mnist/out/base-retrained
BENCHES := fashion-mnist cluttered-fashion-mnist
# Tests marked slow (pytest -m slow) run in CI, or here with SLOW=1; a developer's `make test` skips them.
SLOW ?= $(CI)
PYTEST_ARGS ?= $(if $(SLOW),,-m "not slow")

.PHONY: setup data demo base $(addprefix base-,$(BENCHES)) test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>/dev/null || true
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data:
	@if [ ! -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "note: Fashion-MNIST not in $(FMNIST_DIR); tnt will try torchvision's download"; \
	  fi; \
	fi

demo: setup data
	$(PY) examples/fashion_mnist/demo.py

base: $(addprefix base-,$(BENCHES))

$(addprefix base-,$(BENCHES)): base-%: setup data
	$(PY) examples/fashion_mnist/train_base.py --bench $* --into $(BASE_INTO)/$* --force

test: setup data
	$(PY) -m ruff check tnt_cli tests examples
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check tnt_cli tests examples
	$(PY) -m ruff format --check tnt_cli tests examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
