# The two set-up commands: `make run` (the main job on the embedded defaults) and `make test`.
.PHONY: install run test test-fast system

install:
	bash scripts/install.sh

run: install
	.venv/bin/python -m engine

system:
	bash scripts/setup_system.sh

# The full suite, slow tests included (CI runs exactly this).
test: install system
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m pytest -q -m "not slow"
