# Two commands do all set-up on a fresh machine:
#   make demo   install, get the data, show what the toolkit does (about 10 minutes on 2 CPU cores)
#   make test   install everything the tests need, then run them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHIONGEN := $(VENV)/bin/fashiongen
DATASET_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

.PHONY: install install-bench dataset browser demo test test-unit lint bench bench-quality clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,web,onnx]'
	touch $@

install: $(VENV)/.installed

# The official Fashion-MNIST files from Debian's package, where apt is available and we are root;
# elsewhere fashiongen downloads them (checksummed) into ~/.cache/fashiongen on first use.
dataset:
	@if [ -f $(DATASET_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else echo "note: $(DATASET_DIR) missing; fashiongen will download Fashion-MNIST on first use"; fi

# Debian's chromium for the web studio's browser test (Playwright drives /usr/bin/chromium and
# never downloads a browser); without apt and root the test skips with a note.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || \
		 (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)) \
		>/dev/null; \
	else echo "note: /usr/bin/chromium missing; the browser test will be skipped"; fi

demo: install dataset
	rm -rf $(DEMO_DIR)
	mkdir -p $(DEMO_DIR)
	$(FASHIONGEN) zoo
	$(FASHIONGEN) sample --model ddpm --per-class --num-samples 80 --out $(DEMO_DIR)/zoo_ddpm.png
	$(FASHIONGEN) sample --model hybrid --per-class --num-samples 80 --out $(DEMO_DIR)/zoo_hybrid.png
	$(FASHIONGEN) data info
	$(FASHIONGEN) train --config dcgan-quick --out $(DEMO_DIR)/dcgan
	$(FASHIONGEN) sample $(DEMO_DIR)/dcgan --num-samples 64 --seed 1 --out $(DEMO_DIR)/demo_samples.png
	@echo
	@echo "Demo done. Look at:"
	@echo "  pretrained zoo, one row per class: $(DEMO_DIR)/zoo_ddpm.png $(DEMO_DIR)/zoo_hybrid.png"
	@echo "  samples (fresh seed):    $(DEMO_DIR)/demo_samples.png"
	@echo "  grids during training:   $(DEMO_DIR)/dcgan/samples/"
	@echo "  loss curves:             $(DEMO_DIR)/dcgan/loss_curves.png"
	@echo "  progress animation:      $(DEMO_DIR)/dcgan/progress.gif"
	@echo "  checkpoint (safetensors): $(DEMO_DIR)/dcgan/final/"

test: install dataset browser
	$(VENV)/bin/pytest -q

test-unit: install
	$(VENV)/bin/pytest -q tests/unit -m "not slow"

install-bench: install
	$(PY) -m pip install -q -e '.[dev,web,onnx,bench]'

# Measurements, not tests (benchmarks/README.md): throughput of every family and peer beside
# the machine's fp32 roof, sampling speed per sampler and backend, the distilled students'
# speed beside their teachers; minutes.
bench: install-bench dataset
	$(PY) benchmarks/throughput.py --out docs/results
	$(PY) benchmarks/fast_sampling.py --part speed --out docs/results/distillation

# Every family and peer trained for the same CPU budget, then scored (about 90 minutes);
# the distilled students' quality beside their teachers.
bench-quality: install-bench dataset
	$(PY) benchmarks/quality_per_budget.py --out docs/results/quality_per_budget_v2
	$(PY) benchmarks/fast_sampling.py --part quality --out docs/results/distillation

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
