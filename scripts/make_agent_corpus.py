"""Write the fictional corpus and its question set for the agent path (deterministic, seed 7).

The Ellisande Coast is invented for this repository: its towns and companies exist only in
`data/corpus/ellisande/*.md`, so a model can answer questions about them only by searching. Each
entity is one short document; its facts are listed in `data/ellisande/facts.jsonl` with a split:
`eval` entities feed the task rows (`data/ellisande/ellisande_qa.jsonl`, conf/task/ellisande_qa.yaml),
`train` entities feed scripts/train_tool_caller.py (other entities, other question wordings). A
`train` company based in an `eval` town names that town, so its document is an evaluation document
too: engine/training/trajectories.py corpus_split keeps it out of training, by content.

    python scripts/make_agent_corpus.py   # rewrites the three outputs; the same bytes every time
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
N_TOWNS, N_COMPANIES = 56, 44
N_EVAL_TOWNS, N_EVAL_COMPANIES = 24, 18  # the rest train the tool caller

ONSETS = ["br", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "w", "th", "st", "gr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
CODAS = ["n", "r", "l", "s", "th", "m", "nd", "rk", "ck", "x", "ll", "w"]
TOWN_ENDS = ["wick", "mouth", "ford", "haven", "stead", "bury", "holm", "vale", "by", "port"]
FIRST = ["Odile", "Benedikt", "Marisol", "Tobiah", "Ysolde", "Corentin", "Henrike", "Anselm", "Liesel", "Quillon",
         "Rosalind", "Evander", "Maelis", "Jorund", "Philippa", "Casimir", "Ottilie", "Leander", "Wilhelmina", "Ferris"]
INDUSTRIES = ["kelp farming", "slate quarrying", "oyster fishing", "glassblowing", "peat cutting", "clockmaking",
              "salt panning", "wool weaving", "boatbuilding", "amber polishing", "cider pressing", "rope making"]
FESTIVALS = ["Lantern Regatta", "Salt Moon Fair", "Heron Parade", "Tide Bell Festival", "Driftwood Carnival",
             "Copper Kite Day", "Night of Gulls", "Barley Crown Feast", "Fog Horn Week", "Amber Market"]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
PRODUCTS = ["tide clocks", "copper kettles", "lighthouse lenses", "barometers", "weather vanes", "ship compasses",
            "kelp crackers", "wool blankets", "sea lanterns", "cork floats", "brass telescopes", "peat stoves"]
ANIMALS = ["heron", "otter", "puffin", "seal", "gannet", "stoat", "cormorant", "hare", "curlew", "badger"]


def name(rng: random.Random, syllables: int = 2) -> str:
    s = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables - 1))
    return (s + rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)).capitalize()


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {name(rng)}"


def towns_and_companies(rng: random.Random) -> tuple[list[dict], list[dict]]:
    seen: set[str] = set()

    def fresh(make) -> str:
        while True:
            n = make()
            if n not in seen:
                seen.add(n)
                return n

    towns = []
    for _ in range(N_TOWNS):
        towns.append({"kind": "town", "name": fresh(lambda: name(rng) + rng.choice(TOWN_ENDS)),
                      "founded": rng.randint(1420, 1890), "founder": person(rng), "mayor": person(rng),
                      "population": f"{rng.randint(2, 60)},{rng.randint(100, 999)}",
                      "industry": rng.choice(INDUSTRIES), "festival": rng.choice(FESTIVALS),
                      "month": rng.choice(MONTHS), "river": fresh(lambda: "River " + name(rng))})
    companies = []
    for _ in range(N_COMPANIES):
        companies.append({"kind": "company", "name": fresh(lambda: name(rng) + " " + rng.choice(
                              ["Instruments", "Works", "Foundry", "Mills", "Trading Company", "Brothers", "Optics"])),
                          "founded": rng.randint(1780, 2015), "founder": person(rng), "ceo": person(rng),
                          "town": rng.choice(towns)["name"], "product": rng.choice(PRODUCTS),
                          "employees": rng.randint(40, 9000), "mascot": rng.choice(ANIMALS)})
    return towns, companies


def town_doc(t: dict) -> str:
    return (f"# {t['name']}\n{t['name']} is a town on the Ellisande Coast, where the {t['river']} meets the sea. "
            f"It was founded in {t['founded']} by {t['founder']}. Its main industry is {t['industry']}, and "
            f"its population was {t['population']} at the last census. The current mayor of {t['name']} is "
            f"{t['mayor']}. Every {t['month']} the town holds the {t['festival']}.\n")


def company_doc(c: dict) -> str:
    return (f"# {c['name']}\n{c['name']} is a manufacturer based in {c['town']} on the Ellisande Coast. "
            f"The company was founded in {c['founded']} by {c['founder']} and is best known for its "
            f"{c['product']}. It employs {c['employees']} people. Its chief executive is {c['ceo']}. "
            f"The company mascot is a {c['mascot']}.\n")


# (attribute, answer key): the facts a question may ask about, per kind.
TOWN_FACTS = ["founded", "founder", "mayor", "population", "industry", "festival", "river"]
COMPANY_FACTS = ["founded", "founder", "ceo", "town", "product", "employees", "mascot"]

# The evaluation wording; scripts/train_tool_caller.py asks with its own templates (never these).
EVAL_TEMPLATES = {
    ("town", "founded"): "In what year was the town of {name} founded?",
    ("town", "founder"): "Who founded the town of {name}?",
    ("town", "mayor"): "Who is the current mayor of {name}?",
    ("town", "population"): "What was the population of {name} at the last census?",
    ("town", "industry"): "What is the main industry of {name}?",
    ("town", "festival"): "What festival does {name} hold every year?",
    ("town", "river"): "Which river meets the sea at {name}?",
    ("company", "founded"): "In what year was {name} founded?",
    ("company", "founder"): "Who founded {name}?",
    ("company", "ceo"): "Who is the chief executive of {name}?",
    ("company", "town"): "In which town is {name} based?",
    ("company", "product"): "What is {name} best known for making?",
    ("company", "employees"): "How many people does {name} employ?",
    ("company", "mascot"): "What animal is the mascot of {name}?",
}


def slug(text: str) -> str:
    return "_".join(text.lower().replace(",", "").split())


def main() -> None:
    rng = random.Random(SEED)
    towns, companies = towns_and_companies(rng)
    corpus = ROOT / "data" / "corpus" / "ellisande"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.glob("*.md"):
        old.unlink()
    facts, rows = [], []
    for kind, entities, n_eval, keys in (("town", towns, N_EVAL_TOWNS, TOWN_FACTS),
                                          ("company", companies, N_EVAL_COMPANIES, COMPANY_FACTS)):
        for i, e in enumerate(entities):
            doc_id = f"ellisande/{slug(e['name'])}.md"
            (ROOT / "data" / "corpus" / doc_id).write_text(town_doc(e) if kind == "town" else company_doc(e))
            split = "eval" if i < n_eval else "train"
            for key in keys:
                facts.append({"entity": e["name"], "kind": kind, "attribute": key, "answer": str(e[key]),
                              "doc": doc_id, "split": split})
            if split == "eval":  # two questions per evaluated entity, attributes drawn without repeat
                for key in rng.sample(keys, 2):
                    rows.append({"id": f"ell-{len(rows) + 1:03d}", "question": EVAL_TEMPLATES[(kind, key)].format(
                        name=e["name"]), "answer": str(e[key]), "entity": e["name"], "attribute": key,
                        "doc": doc_id, "false_premise": False, "num_hops": "one-hop", "fact_type": "never-changing",
                        "effective_year": "2026"})
    out = ROOT / "data" / "ellisande"
    out.mkdir(exist_ok=True)
    (out / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    (out / "ellisande_qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(towns) + len(companies)} documents, {len(facts)} facts, {len(rows)} evaluation questions")


if __name__ == "__main__":
    main()
