# Two commands do all set-up on a fresh machine:
#   make run    create .venv if needed, install the pinned dependencies, run the pipeline
#   make test   the same set-up, then lint and the whole test suite
# A second call does not reinstall: .venv/.installed records the lock file it installed.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml say `python`: make it the virtual environment's.
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install run test test-unit test-frameworks lint bench lock tutorial quick clean mutation reproduce

install: $(STAMP)

$(STAMP): requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@cp requirements.lock $(STAMP)

run: install
	$(BIN)/dvc repro

# Each registered framework's tests run in a pytest process of their own: importing TensorFlow and
# then torchvision in one process segfaults. A framework with checks of its own has tests/<name>/
# (which star-imports the trainer contract); any other runs the contract alone
# (tests/trainer_contract.py --framework <name>). The framework-free suite (incl. end to end) runs
# last. The list comes from the registry (stages/common/frameworks.py).
FRAMEWORKS = $(shell $(BIN)/python -c "from stages.common import frameworks; print(' '.join(frameworks.names()))")
test: install lint test-frameworks test-unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# One framework's tests (shell; $(1) is its name): its folder, or the trainer contract alone.
framework_tests = if [ -d tests/$(1) ]; then echo "== tests/$(1)"; $(BIN)/python -m pytest tests/$(1); \
	else echo "== the trainer contract for $(1)"; $(BIN)/python -m pytest tests/trainer_contract.py --framework $(1); fi

test-frameworks: install
	@set -e; for framework in $(FRAMEWORKS); do $(call framework_tests,$$framework); done

test-%: install
	@$(call framework_tests,$*)

test-unit: install
	$(BIN)/python -m pytest tests $(foreach framework,$(FRAMEWORKS),--ignore=tests/$(framework))

bench: install
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/train_bench.py

# The classic two-framework tutorial's recipe as a DVC experiment (presets/README.md), run outside
# the workspace (--temp): params.yaml, reports/ and the outputs keep the default run.
tutorial: install
	$(BIN)/dvc exp run --temp -n tutorial $(shell cat presets/tutorial.args)

# One experiment, its -S values checked before DVC touches the workspace (sweep/exp.py), e.g.
#   make exp ARGS="-S train.learning_rate=0.003"
.PHONY: exp
exp: install
	$(BIN)/python -m sweep.exp $(ARGS)

# A grid of DVC experiments on a Dask cluster (README: "Sweeps on a Dask cluster"), e.g.
#   make sweep GRID=my-grid.yaml SWEEP_ARGS="--scheduler tcp://scheduler:8786"
GRID ?= sweep/grid.example.yaml
.PHONY: sweep
sweep: install
	$(BIN)/python -m sweep $(GRID) $(SWEEP_ARGS)

# The whole pipeline in about a minute: a few thousand images, one epoch (presets/README.md).
quick: install
	$(BIN)/dvc exp run --temp -n quick $(shell cat presets/quick.args)

# Every registered framework (presets/every-framework.args) on the default recipe, as a DVC
# experiment outside the workspace; its report lands in results/every-framework/ (committed, linked
# from the README). The stages it shares with the default run (data, Keras and PyTorch) match the
# committed dvc.lock and are not rerun, so only the other frameworks train.
EVERY = results/every-framework
.PHONY: every-framework
every-framework: install
	$(BIN)/dvc exp remove every-framework 2>/dev/null || true
	$(BIN)/dvc exp run --temp -n every-framework $(shell cat presets/every-framework.args)
	rm -rf $(EVERY) && mkdir -p $(EVERY)
	ref=$$(git rev-parse HEAD | sed 's#^..#refs/exps/&/#')/every-framework && \
		git archive "$$ref" reports | tar -x -C $(EVERY) --strip-components=1
	git rev-parse HEAD > $(EVERY)/revision  # the code that made it (tests/test_results.py)

# The experiments with the headline metrics only: `dvc exp show` has more columns than a terminal.
EXPS_KEEP = Experiment|[a-z_]+\.test_accuracy$$|[a-z_]+_vs_[a-z_]+\.train_time_ratio$$
.PHONY: exps docs
exps: install
	@$(BIN)/dvc exp show --no-pager --drop '.*' --keep '$(EXPS_KEEP)' $(EXPS_ARGS)

# Did the rerun reproduce the study? The workspace's results against a revision's committed ones
# (default HEAD; `make reproduce AGAINST=v1.0`): one line, exit 1 for "not reproduced", and
# reports/reproduction.md (stages/reproduce, docs/reproduce.md).
AGAINST ?= HEAD
reproduce: install
	$(BIN)/python -m stages.reproduce --against $(AGAINST)

# Rewrite the quoted blocks of README.md and docs/ from the committed results (docs/sync.py).
docs: install
	$(BIN)/python docs/sync.py

# requirements.lock pins every package for every platform at once (Linux x86_64 with or without a
# GPU, macOS arm64, ...): uv resolves requirements.txt universally, keeps the pins already in the
# lock unless requirements.txt moved them, and writes environment markers on packages only some
# platforms need (CUDA wheels and triton: Linux). `make lock UPGRADE=--upgrade` takes the newest
# allowed versions. tests/test_requirements_lock.py resolves the lock for Linux and macOS.
lock: install
	$(BIN)/uv pip compile requirements.txt --universal --python-version 3.11 --no-annotate \
		--custom-compile-command "make lock" --output-file requirements.lock $(UPGRADE)

# Mutation testing with mutmut: slow, so not part of `make test` (kill rates and the survivors
# judged equivalent: TESTING.md). Each core module is mutated alone, in a scratch copy of the
# project, and judged only by the tests that own it: MUTATION_<name> = the module, then its tests.
#   make mutation MODULES="schedules atomic"            some modules only
#   make mutation MODULES=torch MUTANTS='stages.backends.torch.x_fit*'   matching mutants only
# Framework backends run with process_isolation = forkserver (torch and TensorFlow are not
# fork-safe once used); each mutant imports its framework afresh, so they take hours in full.
MODULES ?= schedules metrics atomic training evaluate stats resampling torch keras
MUTANTS ?=
MUTATION_DIR ?= $(or $(TMPDIR),/tmp)/mutation-$(notdir $(CURDIR))
MUTATION_schedules := stages/common/schedules.py tests/common/test_schedules.py
MUTATION_metrics := stages/common/metrics.py tests/common/test_metrics.py tests/evaluate/test_evaluate.py
MUTATION_atomic := stages/common/atomic.py tests/common/test_atomic.py
MUTATION_training := stages/train/training.py tests/train/test_training.py tests/torch/test_train_torch.py
MUTATION_evaluate := stages/evaluate/__main__.py tests/evaluate/test_evaluate.py tests/torch/test_train_torch.py
MUTATION_stats := stages/report/stats.py tests/report/test_stats.py tests/report/test_inference.py
MUTATION_resampling := stages/report/resampling.py tests/report/test_inference.py tests/report/test_bootstrap_strata.py
MUTATION_torch := stages/backends/torch/*.py tests/torch/test_train_torch.py
MUTATION_keras := stages/backends/keras/*.py tests/keras/test_train_keras.py

define mutmut_module
	@rm -rf $(MUTATION_DIR)/$(1) && mkdir -p $(MUTATION_DIR)/$(1)
	@cp -r stages tests params.yaml pyproject.toml $(MUTATION_DIR)/$(1)/
	@printf '[mutmut]\nsource_paths = stages\nonly_mutate = %s\nalso_copy = params.yaml\nprocess_isolation = %s\npytest_add_cli_args_test_selection =%b\n' \
		'$(firstword $(2))' '$(if $(filter stages/backends/%,$(firstword $(2))),forkserver,fork)' \
		'$(foreach test,$(wordlist 2,99,$(2)),\n    $(test))' > $(MUTATION_DIR)/$(1)/setup.cfg
	@echo "mutmut: $(firstword $(2)), judged by $(wordlist 2,99,$(2))"
	@cd $(MUTATION_DIR)/$(1) && $(BIN)/mutmut run --max-children 2 $(MUTANTS) > mutmut.log 2>&1; \
		$(BIN)/mutmut export-cicd-stats > /dev/null && $(BIN)/mutmut results > survivors.txt; \
		$(BIN)/python -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
		print(f\"$(1) ($(firstword $(2))): {s['killed']}/{s['total']} killed ({100 * s['killed'] / max(s['total'], 1):.0f}%), \
		{s['survived']} survived, {s['no_tests']} without tests, {s['timeout']} timed out; see $(MUTATION_DIR)/$(1)/survivors.txt\")"

endef

mutation: install
	$(foreach module,$(MODULES),$(call mutmut_module,$(module),$(MUTATION_$(module))))

clean:
	rm -rf $(VENV)
