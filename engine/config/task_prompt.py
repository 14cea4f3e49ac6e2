"""The prompt part of a task (docs/architecture.md, "Task configuration"): what the model is shown
(templates, few-shot examples, system prompt, chat) and how it answers (generation settings)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from engine.config.task_data import FrozenConfig
from engine.config.templates import is_jinja, template_fields

# What a Jinja prompt template (mc/rc/generate_template) may use: the rendered query, the choices (a
# list), the lettered choice block (what `{choices}` is in a format template), the letters, the row.
PROMPT_VARIABLES = ("query", "choices", "choice_block", "letters", "doc")


class FewshotConfig(FrozenConfig):
    split: str | None = None  # None: the evaluated split, excluding the evaluated instance
    seed: int = 1234
    same_cluster: bool = False  # draw from the instance's cluster (MMLU subject)
    # Curated examples, used in order before any drawn one: rows of the dataset's shape.
    curated: list[dict[str, Any]] = []
    # Drawn examples are the same for every instance (seeded by `seed` only), as OLMES fixes its
    # few-shot sets; otherwise the draw is seeded per instance.
    fixed: bool = False


class GenerationConfig(FrozenConfig):
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = []
    samples: int = Field(default=1, ge=1)


class TaskPrompt(FrozenConfig):
    """`task.prompt`: each field is a YAML key of the task as written (`num_fewshot`, `mc_template`, ...)."""

    num_fewshot: int = Field(default=0, ge=0)
    fewshot: FewshotConfig = FewshotConfig()
    # Prompt templates; `{query}` is the rendered query, `{choices}` the lettered choice block. In a
    # Jinja template: `query`, `choices` (a list), `choice_block`, `letters`, `doc` (the row).
    mc_template: str = "Question: {query}\n{choices}\nAnswer:"
    rc_template: str = "Question: {query}\nAnswer:"
    generate_template: str = "{query}"
    answer_prefix: str = " "
    fewshot_separator: str = "\n\n"
    unconditional_context: str = "Answer:"
    system_prompt: str | None = None
    chat: bool = True  # generation through the model's chat template
    chain_of_thought: bool = False
    # Appended to the evaluated question (not to few-shot examples) when chain_of_thought is on.
    cot_prompt: str | None = None
    generation: GenerationConfig = GenerationConfig()

    @field_validator("mc_template", "rc_template", "generate_template")
    @classmethod
    def _template_placeholders(cls, v: str, info: ValidationInfo) -> str:
        where = f"task.{info.field_name}"
        if is_jinja(v):
            unknown = sorted(template_fields(v, where) - set(PROMPT_VARIABLES))
            if unknown:
                raise ValueError(
                    f"`{where}` Jinja template {v!r} uses `{unknown[0]}`, but it can only use "
                    f"{', '.join(f'`{a}`' for a in PROMPT_VARIABLES)} (`doc` is the dataset row). Fix: write "
                    f"`doc.{unknown[0]}` for a row column, or put row columns in `task.fields.query` (rendered as `query`)"
                )
            return v
        allowed = {"query", "choices"} if info.field_name == "mc_template" else {"query"}
        unknown = sorted(template_fields(v, where) - allowed)
        if unknown:
            raise ValueError(
                f"`{where}` template {v!r} uses `{{{unknown[0]}}}`, but it can only use "
                f"{' and '.join(f'`{{{a}}}`' for a in sorted(allowed))}. Fix: put row columns in `task.fields.query` "
                "(rendered as `{query}`), or write the template in Jinja, where `doc` is the row"
            )
        return v
