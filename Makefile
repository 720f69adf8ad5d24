# Every target creates .venv on first use, so a fresh clone needs only Python >= 3.11 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/dispatchd.toml
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean senlin-venvs image container-test

install: $(STAMP)

$(STAMP): pyproject.toml plugins/jsonfile/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "dispatchd needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e plugins/jsonfile
	@touch $@

run: $(STAMP)
	$(BIN)/dispatchd serve -c $(CONFIG)

# Senlin 16.0.0 in environments of its own, so its pins never meet dispatchd's: one as PyPI
# resolves it today (SQLAlchemy 2), one on SQLAlchemy 1.4 as deployments of Senlin's era run.
# The Senlin tests run Senlin's code in them, in subprocesses (tests/support/senlin.py).
SENLIN       := senlin==16.0.0
SENLIN_VENV  ?= .venv-senlin
SENLIN14_VENV ?= .venv-senlin-sa14
$(SENLIN_VENV)/.installed: plugins/senlin/pyproject.toml
	$(PYTHON) -m venv $(SENLIN_VENV)
	$(SENLIN_VENV)/bin/python -m pip install --quiet '$(SENLIN)' -e plugins/senlin
	@touch $@
$(SENLIN14_VENV)/.installed: plugins/senlin/pyproject.toml
	$(PYTHON) -m venv $(SENLIN14_VENV)
	$(SENLIN14_VENV)/bin/python -m pip install --quiet '$(SENLIN)' 'sqlalchemy>=1.4,<2' -e plugins/senlin
	@touch $@
senlin-venvs: $(SENLIN_VENV)/.installed $(SENLIN14_VENV)/.installed

test: $(STAMP) senlin-venvs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Not part of `make test`: several minutes of full load on both cores (see docs/performance.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk; } \
		|| { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	@touch $@

bench: $(BENCH_STAMP)
	cd bench && ../$(BIN)/python run.py $(BENCH_ARGS)

# The deployment files too: compose.yaml against the Compose Specification's schema, the
# Kubernetes resources against the API's schemas of the oldest version they support (both
# validators ship their schemas: no network). tests/test_deploy.py checks what schemas cannot.
K8S_VERSION   ?= 1.30.0
K8S_RESOURCES := $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))

lint: $(STAMP)
	$(BIN)/ruff check src tests plugins bench
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --quiet --strict -k $(K8S_VERSION) $(K8S_RESOURCES)

# The container image, built as docs/container.md describes: wheels of dispatchd, its plugins and
# every dependency first, then a build that fetches nothing. The wheels' Python picks the base
# (python:3.11-slim for the venv's 3.11), so the compiled ones fit; BASE= a local base instead.
# CONTAINER="podman --runtime runc" where crun does not work.
CONTAINER    ?= $(if $(shell command -v podman),podman,docker)
IMAGE        ?= dispatchd
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL_PYTHON ?= $(BIN)/python
BASE         ?= python:$(shell $(WHEEL_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-slim

# What the wheels hold (their RECORDs list each file's hash; a rebuilt wheel's bytes differ by its
# timestamps alone): the image rebuilds its install layer when, and only when, this changes.
WHEELS_DIGEST := import glob, hashlib, zipfile; h = hashlib.sha256(); \
	[h.update(z.read(n)) for w in sorted(glob.glob("dist/wheels/*.whl")) \
	 for z in [zipfile.ZipFile(w)] for n in z.namelist() if n.endswith(".dist-info/RECORD")]; \
	print(h.hexdigest()[:16])

image: $(STAMP)
	rm -rf dist/wheels
	$(WHEEL_PYTHON) -m pip wheel --quiet --wheel-dir dist/wheels '.[uvloop]' plugins/jsonfile
	$(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) \
		--build-arg WHEELS_DIGEST=$$($(WHEEL_PYTHON) -c '$(WHEELS_DIGEST)') \
		--build-arg BASE=$(BASE) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# The replica test of tests/test_replicas.py against two containers of the image (host networking,
# this machine's PostgreSQL and RabbitMQ, HAProxy on the host): about a minute, not in `make test`.
container-test: image
	DISPATCHD_CONTAINER="$(CONTAINER)" DISPATCHD_IMAGE=$(IMAGE):$(VERSION) \
		$(BIN)/python -m pytest tests/container_replicas.py -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(SENLIN_VENV) $(SENLIN14_VENV) var dist .pytest_cache .mypy_cache .ruff_cache
