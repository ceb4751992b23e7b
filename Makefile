# Every target is idempotent: it does the set-up it needs, and only what is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := python3 python3-venv ffmpeg mosquitto redis-server gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 \
	python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools libportaudio2 systemd \
	pulseaudio pulseaudio-utils libasound2-plugins
PYTEST_ARGS ?=

.PHONY: setup apt venv demo test test-all clean

setup: apt venv

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "installing system packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(PY):
	python3.11 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The main job on its embedded default: bundled demo stream, shipped checkpoint, local services.
demo: setup
	$(VENV)/bin/avcc-stream demo

# The test suite (what CI runs). Long runs are opt-in: make test PYTEST_ARGS=--run-slow
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
