# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py constraints.txt | sha1sum | cut -c1-12)
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm espeak-ng flite

.PHONY: demo test bench sysdeps venv clean

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	@command -v cc >/dev/null || $(MAKE) --no-print-directory sysdeps-cc
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[all]'
	@rm -f $(VENV)/.installed-*; touch $@

# System packages for the Cortex-M target and the offline speech set (espeak-ng, flite),
# installed only when missing (needs root).
sysdeps:
	@missing=""; \
	command -v arm-none-eabi-gcc >/dev/null || missing="$$missing gcc-arm-none-eabi libnewlib-arm-none-eabi"; \
	command -v qemu-system-arm >/dev/null || missing="$$missing qemu-system-arm"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v flite >/dev/null || missing="$$missing flite"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

sysdeps-cc:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null

demo: $(STAMP)
	$(VENV)/bin/tinyengine-tf demo

# One pytest worker per core (CI has 2); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

test: $(STAMP) sysdeps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(PY) benchmarks/bench_tflm.py

clean:
	rm -rf $(VENV) .te_cache demo_out .pytest_cache
