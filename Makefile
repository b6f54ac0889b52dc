# imagebridge — the two commands a new machine needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := dcmtk orthanc orthanc-dicomweb orthanc-gdcm
SUDO_APT := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: install viewer run test lint typecheck pytest system-deps postgres bench clean

install: $(STAMP) viewer

$(STAMP): pyproject.toml tests/fhir/node/package-lock.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,samples]'
	@command -v npm >/dev/null || { $(SUDO_APT) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO_APT) apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/fhir/node && npm ci --no-audit --no-fund --silent
	@touch $(STAMP)

# The OHIF diagnostic viewer (a pinned static build from npm, served at /viewer; never committed).
OHIF_VERSION := 3.13.2
OHIF_DIR := var/ohif
OHIF_READY := $(OHIF_DIR)/viewer/.ohif-$(OHIF_VERSION)

viewer: $(OHIF_READY)

$(OHIF_READY): | $(STAMP)
	@mkdir -p $(OHIF_DIR)
	@command -v npm >/dev/null || { $(SUDO_APT) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO_APT) apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(OHIF_DIR) && test -f ohif-app-$(OHIF_VERSION).tgz || npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null
	rm -rf $(OHIF_DIR)/package && tar -xzf $(OHIF_DIR)/ohif-app-$(OHIF_VERSION).tgz -C $(OHIF_DIR)
	$(PY) -m imagebridge.portal.viewer $(OHIF_DIR)/package/dist $(OHIF_DIR)/viewer
	rm -rf $(OHIF_DIR)/package
	@touch $@

run: install
	$(VENV)/bin/imagebridge serve --load-samples

# Debian packages the tests talk to (real DICOM peers, Orthanc, Chromium for the browser tests);
# installed only when missing. Playwright drives /usr/bin/chromium (never `playwright install`).
system-deps:
	@missing=""; \
	command -v dcmsend >/dev/null || missing="$$missing dcmtk"; \
	test -x /usr/sbin/Orthanc || missing="$$missing orthanc"; \
	test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || missing="$$missing orthanc-dicomweb"; \
	test -f /usr/share/orthanc/plugins/libOrthancGdcm.so || missing="$$missing orthanc-gdcm"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The PostgreSQL server the suite also runs against (127.0.0.1:5432, trust auth, database test).
postgres:
	@scripts/ensure-postgres.sh

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(VENV)/bin/pytest -n 2 --dist loadfile

test: install system-deps postgres lint typecheck pytest

bench: install system-deps
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) imagebridge-data .pytest_cache .mypy_cache .ruff_cache
