# Quick start on a fresh machine:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test test-slow test-vision compat bench compare clean

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
	OMP_NUM_THREADS=1 $(BIN)/pytest -m "not slow" -q -n auto  # one process per core, one thread each

test-slow: data
	OMP_NUM_THREADS=1 $(BIN)/pytest -m slow -q -n auto

# torchvision / timm architectures: the vision extra in its own venv (torchvision 0.28 needs torch's CUDA build)
VISION_VENV := .venv-vision
VISION_STAMP := $(VISION_VENV)/.installed

$(VISION_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/pip install --quiet -c constraints.txt -e '.[test,vision]' "torch==2.13.0,!=2.13.0+cpu"
	touch $(VISION_STAMP)

test-vision: $(VISION_STAMP)
	OMP_NUM_THREADS=1 $(VISION_VENV)/bin/pytest -m "vision and not slow" -q tests/vision

# the compatibility table (hours on one thread; resumable): docs/BENCHMARKS.md
compat: $(VISION_STAMP)
	OMP_NUM_THREADS=1 $(VISION_VENV)/bin/python benchmarks/compat.py --results runs/compat.jsonl
	$(VISION_VENV)/bin/python benchmarks/compat.py --results runs/compat.jsonl --table docs/COMPATIBILITY.md

bench: install
	$(BIN)/python benchmarks/throughput.py

compare: data
	$(BIN)/python benchmarks/compare.py --standard

clean:
	rm -rf $(VENV) $(VISION_VENV) runs *.egg-info .pytest_cache
