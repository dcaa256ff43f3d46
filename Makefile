# `make demo`: set-up, then a short real Att-DARTS search on Fashion-MNIST (CPU) and its report.
# `make test`: set-up, then the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ifndef DEMO_RUN
DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: setup system demo test clean

setup: system $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# graphviz draws the cells; dataset-fashion-mnist holds the demo data offline; g++ lets --compile
# (torch.compile) build its CPU kernels; chromium lets a test load report.html in a headless browser.
# chromium is installed on its own: where it cannot be, the rest still is, and that test is skipped.
system:
	@if command -v dot >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 && [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz dataset-fashion-mnist g++ >/dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz dataset-fashion-mnist g++ >/dev/null; \
	else echo "note: could not install system packages; run 'sudo apt-get install graphviz dataset-fashion-mnist g++' (cell drawings, offline Fashion-MNIST and --compile need them)"; fi
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; } \
	  && $$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then :; \
	else echo "note: could not install chromium; run 'sudo apt-get update && sudo apt-get install chromium' (the test that loads report.html in a headless browser needs it)"; fi

demo: setup
	$(PY) train_search.py --dataset fashion-mnist --data data --subset 2000 --epochs 2 --layers 5 \
	  --init_channels 8 --batch_size 32 --workers 0 --save $(DEMO_RUN)
	$(PY) visualize.py $(DEMO_RUN)
	@echo "demo run: $(DEMO_RUN)  (genotype: $(DEMO_RUN)/genotype.json, report: $(DEMO_RUN)/report/report.html)"

# One pytest worker per core (pytest-xdist): each test runs single-threaded (tests/conftest.py).
test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n auto

clean:
	rm -rf $(VENV) runs
