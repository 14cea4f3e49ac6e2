# The two set-up commands: `make run` (the main job on the embedded defaults) and `make test`.
.PHONY: install run test test-fast system lint

install:
	bash scripts/install.sh

run: install
	.venv/bin/python -m engine

system:
	bash scripts/setup_system.sh

# The full suite, slow tests included (CI runs exactly this), with lint and types (ruff, mypy)
# running beside it: both must pass.
test: install system
	@bash scripts/lint.sh > .lint.log 2>&1 & lint=$$!; \
	export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1; \
	.venv/bin/python -m pytest -q -n 3 --dist loadgroup -m "not serial"; tests=$$?; \
	.venv/bin/python -m pytest -q -m serial; serial=$$?; [ $$tests -ne 0 ] || tests=$$serial; \
	wait $$lint; lint_rc=$$?; echo "--- lint (ruff, mypy) ---"; cat .lint.log; \
	exit $$(( tests != 0 ? tests : lint_rc ))

lint: install
	bash scripts/lint.sh

test-fast: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m pytest -q -m "not slow"

# A shared MLflow tracking server (PostgreSQL + `mlflow server`) for `tracking=server`; stop it with
# `bash scripts/tracking_server.sh stop` (README "Scaling out").
.PHONY: tracking-server
tracking-server: install
	bash scripts/tracking_server.sh start

# The tool-calling SmolLM2 (`model=smollm2_tools`): fine-tuned once on CPU, cached under the evalbench
# home; loss per step in MLflow (README "Agents that really use tools").
.PHONY: tool-model
tool-model: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python scripts/train_tool_caller.py
