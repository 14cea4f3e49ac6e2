"""External evals: a benchmark's own loop (lm-evaluation-harness, inspect_ai, ...) run against the
model gateway, on the host in a subprocess (ExternalEval) or in a container of its own image with no
network but the gateway (SandboxedExternalEval, `sandboxed.py`), its per-sample output recorded like
a native run (docs/architecture.md, "External evals"). `run.run_external` is what the runner
dispatches a task with an `external:` block to."""
