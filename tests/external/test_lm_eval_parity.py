"""Proof of the lm_eval wrapper on the real model: the same HellaSwag rows run natively
(`task=hellaswag variant=rc`) and through lm-evaluation-harness's own loop (`task=lm_eval_hellaswag`,
local-completions against the model gateway) give the same per-question predictions, loglikelihoods
within 1e-3, all ties in `engine.compare`; a re-run of the external eval calls the model 0 times.

Needs the lm-eval venv (`python -m engine.external.venvs lm_eval`, ~2 GB and minutes to build, so CI does not
build it): found in EVALBENCH_VENVS, the evalbench home or the default home (a pytest-xdist worker's private
EVALBENCH_HOME still finds the one built in ~/.cache/evalbench); skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.schema import ExternalConfig
from engine.external import lm_eval

REPO = Path(__file__).resolve().parents[2]
N = 8  # lm-eval starts twice (~15 s each); 8 questions (32 continuations) prove parity as well as 100

pytestmark = pytest.mark.slow


def _engine(tmp: Path, *args: str, module: str = "engine") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=tmp, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _instances(run_dir: Path) -> dict[str, dict]:
    return {r["instance_id"]: r for r in map(json.loads, (run_dir / "instances.jsonl").read_text().splitlines())}


def _norm_pred(rec: dict) -> int:
    lps, choices = rec["logprobs"], rec["choices"]
    return max(range(len(lps)), key=lambda i: lps[i] / len(choices[i]))


@pytest.mark.skipif(not lm_eval.interpreter(ExternalConfig(wrapper="lm_eval")).exists(),
                    reason="the lm-eval venv is in none of " + ", ".join(map(str, lm_eval.venv_dirs())) + " (CI does "
                    "not build it: ~2 GB, minutes); build it with `python -m engine.external.venvs lm_eval`")
def test_lm_eval_hellaswag_matches_the_native_run_and_reruns_from_the_cache(tmp_path: Path) -> None:
    common = [f"limit={N}", f"cache.path={tmp_path / 'cache.sqlite'}", "tracking.mlflow=false", "progress=false"]
    _engine(tmp_path, "task=hellaswag", "variant=rc", f"output_dir={tmp_path / 'native'}", *common)
    _engine(tmp_path, "task=lm_eval_hellaswag", f"output_dir={tmp_path / 'ext'}", *common)
    native_dir, ext_dir = tmp_path / "native" / "hellaswag__rc", tmp_path / "ext" / "lm_eval_hellaswag"
    native, ext = _instances(native_dir), _instances(ext_dir)
    assert native.keys() == ext.keys() and len(native) == N
    for iid, a in native.items():
        b = ext[iid]
        assert b["logprobs"] == pytest.approx(a["logprobs"], abs=1e-3), iid
        assert b["extracted_answer"] == a["extracted_answer"] == _norm_pred(b), iid  # per-character choice
        assert max(range(4), key=b["logprobs"].__getitem__) == max(range(4), key=a["logprobs"].__getitem__), iid
        assert b["scores"]["acc"] == a["scores"]["acc"] and b["scores"]["acc_none"] == a["scores"]["acc_none"], iid
        assert len(b["trajectory"]) == 4 and all(s["content"]["cache_key"] for s in b["trajectory"])

    report = json.loads(_engine(tmp_path, str(ext_dir), str(native_dir), "--format", "json",
                                module="engine.compare").stdout)
    [task] = report["tasks"]
    assert task["alignment"]["n_paired"] == N and task["stats"]["ties"] == N
    assert task["stats"]["wins"] == task["stats"]["losses"] == 0

    first = json.loads((ext_dir / "experiment.json").read_text())["config"]["external_run"]
    assert first["model_calls"] > 0 and first["unmatched_requests"] == 0 and first["gateway_requests"] == 4 * N
    _engine(tmp_path, "task=lm_eval_hellaswag", f"output_dir={tmp_path / 'again'}", *common)
    again = json.loads((tmp_path / "again" / "lm_eval_hellaswag" / "experiment.json").read_text())
    run = again["config"]["external_run"]
    assert run["model_calls"] == 0 and run["cached_requests"] == run["gateway_requests"] == 4 * N
    assert again["scores"]["acc"]["value"] == json.loads((ext_dir / "experiment.json").read_text())["scores"]["acc"]["value"]
