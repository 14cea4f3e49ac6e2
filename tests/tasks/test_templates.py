"""Jinja field and prompt templates reproduce lm-evaluation-harness prompts exactly; `{column}` still works."""

from __future__ import annotations

import re

import jinja2
import pytest

from engine.config.schema import FieldMap, TaskConfig
from engine.config.templates import is_jinja
from engine.tasks import build_task
from engine.tasks.instance import FieldMapError, render_template
from engine.types import LoglikelihoodRequest
from tests.conftest import run_engine
from tests.tasks.conftest import fixture_files, on_fixture


def lm_eval_apply_template(template: str, doc: dict) -> str:
    """lm-evaluation-harness's own rendering (lm_eval/utils.py `apply_template`), written out."""
    env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env.from_string(template).render(**doc)


# lm_eval/tasks/arc/arc_easy.yaml
ARC_DOC_TO_TEXT = "Question: {{question}}\nAnswer:"
# lm_eval/tasks/mmlu/default/_default_template_yaml
MMLU_DOC_TO_TEXT = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
# the same prompt as a loop over the choices
MMLU_LOOP = "{{ question.strip() }}\n{% for c in choices %}{{ 'ABCD'[loop.index0] }}. {{ c }}\n{% endfor %}Answer:"


def _with(spec: str, **update) -> TaskConfig:
    cfg = on_fixture(spec)
    data = {**cfg.model_dump(by_alias=True), **update}
    return TaskConfig.model_validate(data)


def test_lm_eval_arc_prompt_is_reproduced_exactly():
    cfg = _with("arc_easy", fields={**on_fixture("arc_easy").dataset.fields.model_dump(), "query": ARC_DOC_TO_TEXT},
                rc_template="{query}", num_fewshot=0, normalization="none")
    task = build_task(cfg)
    for inst in task.load_instances()[:5]:
        req = task.build_request(inst)
        assert isinstance(req, LoglikelihoodRequest)
        assert req.context == lm_eval_apply_template(ARC_DOC_TO_TEXT, inst.row)
        # doc_to_choice "{{choices.text}}" with lm-eval's target_delimiter " "
        assert req.continuations == tuple(" " + c for c in inst.row["choices"]["text"])
    first = task.load_instances()[0]
    assert task.build_request(first).context == f"Question: {first.row['question']}\nAnswer:"


def test_lm_eval_mmlu_prompt_and_a_loop_over_choices_render_the_same():
    base = on_fixture("mmlu_hub")
    explicit = build_task(_with("mmlu_hub", fields={**base.dataset.fields.model_dump(), "query": MMLU_DOC_TO_TEXT},
                                mc_template="{query}", num_fewshot=0, formulation="mc"))
    looped = build_task(_with("mmlu_hub", fields={**base.dataset.fields.model_dump(), "query": MMLU_LOOP},
                              mc_template="{{ query }}", num_fewshot=0, formulation="mc"))
    for a, b in zip(explicit.load_instances()[:5], looped.load_instances()[:5], strict=True):
        expected = lm_eval_apply_template(MMLU_DOC_TO_TEXT, a.row)
        assert explicit.build_request(a).context == expected == looped.build_request(b).context
        assert explicit.build_request(a).continuations == (" A", " B", " C", " D")  # lm-eval: " " + "A".."D"


def test_jinja_prompt_template_sees_query_choices_letters_and_the_row():
    cfg = _with("arc_easy", num_fewshot=0, formulation="mc",
                mc_template="{{ doc.id }}: {{ query }}\n{% for c in choices %}({{ letters[loop.index0] | lower }}) "
                            "{{ c | regex_replace('\\\\s+', ' ') }}\n{% endfor %}Answer:")
    task = build_task(cfg)
    inst = task.load_instances()[0]
    lines = task.build_request(inst).context.split("\n")
    assert lines[0] == f"{inst.id}: {inst.query}"
    assert lines[1:-1] == [f"({'abcdefgh'[i]}) {c}" for i, c in enumerate(inst.choices or ())]
    assert lines[-1] == "Answer:"


def test_format_templates_still_work_and_are_not_jinja():
    assert not is_jinja("Question: {question}\nAnswer:") and is_jinja("{{ question }}") and is_jinja("{% if x %}{% endif %}")
    assert render_template("Q: {question} ({n})", {"question": "why?", "n": 3}, "`fields.query`") == "Q: why? (3)"
    assert render_template("{{ question | upper }} {", {"question": "why?"}, "`fields.query`") == "WHY? {"


def test_jinja_errors_name_the_field_the_template_and_the_fix():
    with pytest.raises(FieldMapError, match=r"`fields.query` Jinja template '\{\{ questio \}\}' uses something "
                                            r"undefined \('questio' is undefined\); it can use `answer`, `question`"):
        render_template("{{ questio }}", {"question": "q", "answer": "a"}, "`fields.query`")
    with pytest.raises(FieldMapError, match=r"refused by the sandbox"):
        render_template("{{ question.__class__.__mro__ }}", {"question": "q"}, "`fields.query`")
    with pytest.raises(ValueError, match=r"`task.fields.query` Jinja template .* does not parse .*endfor"):
        FieldMap(query="{% for c in choices %}{{ c }}")
    with pytest.raises(ValueError, match=r"`task.mc_template` Jinja template .* uses `question`.*`doc.question`"):
        _with("arc_easy", mc_template="{{ question }}")


def test_a_jinja_query_on_the_command_line(workdir):
    data = fixture_files("arc_easy")["test"]
    res = run_engine(["task=arc_easy", "task.data.path=json", f"task.data.data_files={{test: {data}}}",
                      "task.num_fewshot=0", "task.rc_template='{query}'", "inspect=true", "limit=1", "tracking=none",
                      "task.fields.query='Q: {{ question | upper }}'"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    prompt = next(line for line in res.stdout.splitlines() if line.startswith("Q: "))
    assert prompt == prompt.upper() and len(prompt) > 10
    res = run_engine(["task=arc_easy", "inspect=true", "tracking=none", "task.fields.query='{{ question'"],
                     workdir, timeout=300)
    assert res.returncode == 2 and "`task.fields.query` Jinja template" in res.stderr and "does not parse" in res.stderr
