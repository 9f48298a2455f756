# Two commands for a new user: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test benchmark clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# GWCelery's real IGWN Alert sample messages (tests/test_listen_samples.py):
	# its data files only, so none of its dependencies (Celery ...) come along.
	$(PY) -m pip install --quiet --no-deps gwcelery==3.0.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	bash scripts/demo.sh

test: install
	bash scripts/test.sh

# The six benchmark commands in turn (README.md, "Benchmarks"): all but
# benchmark_bayestar need PostgreSQL, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/orchestrator
# (REDIS_URL set: the latency and alert-path benchmarks use Redis); BAYESTAR takes minutes.
benchmark: export ORCHESTRATOR_DEV ?= 1
benchmark: install
	$(PY) manage.py benchmark_superevents
	$(PY) manage.py benchmark_alert_latency
	$(PY) manage.py benchmark_bayestar
	$(PY) manage.py benchmark_gracedb_upload
	$(PY) manage.py benchmark_alert_path
	$(PY) manage.py benchmark_listen

clean:
	rm -rf $(VENV) var
