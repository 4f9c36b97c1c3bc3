# The README's two commands: `make serve` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := jackd2 fluidsynth fluid-soundfont-gm timgm6mb-soundfont libsndfile1 \
	supercollider-language supercollider-server puredata-core python3-venv gcc libc6-dev chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps python-deps test serve clean

setup: system-deps python-deps

# apt-get only when something is missing, so repeated runs stay fast.
system-deps:
	@if ! command -v jackd >/dev/null || ! command -v fluidsynth >/dev/null || ! command -v gcc >/dev/null \
	   || ! command -v sclang >/dev/null || ! command -v pd >/dev/null || ! command -v chromium >/dev/null \
	   || [ ! -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
# Installing builds the C libraries too (the voice pool, the harmonic inverter's synthesis).
$(VENV)/.installed: pyproject.toml setup.py waeserver/live/_voices.c waeserver/sound/_harmonic.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[test]'
	touch $@

python-deps: $(VENV)/.installed

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

# The live daemon with the shipped model; see README.
serve: setup
	$(VENV)/bin/waeserver serve

clean:
	rm -rf $(VENV) build *.egg-info waeserver/live/_voices*.so waeserver/sound/_harmonic*.so
