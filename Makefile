# Quick start on a fresh machine:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test test-slow bench compare clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST: Debian's package when we may install it, else the official mirror.
data: install
	@if [ ! -d $(DEBIAN_FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || true; \
	fi
	$(BIN)/lassoprune fetch fashion-mnist

demo: data
	$(BIN)/lassoprune run configs/demo.yaml --out runs/demo --no-progress
	$(BIN)/lassoprune deploy --checkpoint runs/demo/prune/model.pt --dense runs/demo/pretrain/model.pt \
		--out runs/demo/deploy --runtime torchscript --batch-sizes 64 --warmup 20 --repeats 10

test: data
	$(BIN)/pytest -m "not slow" -q

test-slow: data
	$(BIN)/pytest -m slow -q

bench: install
	$(BIN)/python benchmarks/throughput.py

compare: data
	$(BIN)/python benchmarks/compare.py --standard

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache
