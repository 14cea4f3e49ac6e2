"""Answer extraction from generated text."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


_PLAIN = re.compile(r"(-?)(\d*)(?:\.(\d*))?")


def normalize_number(text: str) -> str:
    """A plain decimal in one canonical spelling ("1,000.50" -> "1000.5", "007" -> "7", "-0" -> "0"),
    on its digits, exactly: no float in between, which equated 20-digit neighbours (both round to one
    double) and failed on a hostile 400-digit answer (inf) or a "nan". Anything else comes back stripped."""
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    m = _PLAIN.fullmatch(text)
    if m is None or not (m.group(2) or m.group(3)):
        return text
    whole, frac = m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return out if out == "0" else m.group(1) + out


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def gsm8k_answer(text: str) -> str | None:
    """'#### N', then 'the answer is N', then the last number in the text."""
    for pattern in (r"####\s*(-?[\d,]*\.?\d+)", r"answer is\s*:?\s*\$?(-?[\d,]*\.?\d+)"):
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return normalize_number(match.group(1))
    return last_number(text)


def letter_answer(text: str, n_choices: int = 26) -> str | None:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_choices]
    match = re.search(rf"\b([{letters}])\b", text)
    return match.group(1) if match else None


def answer_is(text: str) -> str:
    """The text after the last "answer is" up to the end of its sentence, else the first line."""
    found = re.findall(r"answer is\s*:?\s*(.+?)(?:\.(?:\s|$)|\n|$)", text, flags=re.IGNORECASE)
    return found[-1].strip() if found else first_line(text)


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def extract_answer(kind: str, text: str) -> str | None:
    if kind == "gsm8k":
        return gsm8k_answer(text)
    if kind == "last_number":
        return last_number(text)
    if kind == "letter":
        return letter_answer(text)
    if kind == "first_line":
        return first_line(text)
    if kind == "answer_is":
        return answer_is(text)
    return text.strip()
