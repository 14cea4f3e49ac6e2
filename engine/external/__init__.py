"""External evals: a benchmark's own loop (lm-evaluation-harness, ...) run in a subprocess against
the model gateway, its per-sample output recorded like a native run (docs/architecture.md,
"External evals"). `run.run_external` is what the runner dispatches a task with an `external:`
block to."""
