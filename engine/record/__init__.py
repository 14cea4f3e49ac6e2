"""Run records: the run-folder writer and the MLflow writer (the schema is in engine.types)."""
