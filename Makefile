# Two commands do everything on a fresh machine: `make sweep` and `make test`.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
TEST_STAMP := .venv/.installed-test

export MUJOCO_GL ?= egl

.PHONY: install sweep sweep-quick test test-fast bench report clean

install: $(STAMP)

# torch first, with plain pip: `torch==2.13.0` resolves to the CPU wheel on this machine's disk.
$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) check
	touch $(STAMP)

# The tests also run sweeps on a real Ray head node: the `[ray]` extra.
$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[dev,ray]'
	$(PIP) check
	touch $(TEST_STAMP)

sweep: install
	$(PY) -m rlsweep -m algo=ppo,sac reward=dense,sparse +experiment=sweep_smoke

# The whole pipeline on Pendulum-v1 in about a minute: a check before hours on Lift.
sweep-quick: install
	$(PY) -m rlsweep -m algo=sac,sbx_sac +experiment=sweep_quick

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

# The in-process layer (no `python -m rlsweep` subprocess; tests/conftest.py enforces it):
# configs, validation, storages, claims, in-process sweeps on the synthetic objective.
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

# Regenerate report.html of the newest sweep (or SWEEP=multirun/<date>/<time>).
SWEEP ?= $(shell ls -d multirun/*/* 2>/dev/null | sort | tail -n 1)
report: install
	@test -n "$(SWEEP)" || { echo "no sweep in multirun/: run make sweep first"; exit 2; }
	$(PY) -m rlsweep.report $(SWEEP)

bench: install
	$(PY) -m bench

clean:
	rm -rf .venv multirun outputs .pytest_cache
