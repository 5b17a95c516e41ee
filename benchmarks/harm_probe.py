"""How well the harmful-instruction probe (`safety_mix_harmful_classifier: probe`) tells harmful from benign prompts.

The probe is fit on each reference (the built-in sets by default) with the model's middle-layer instruction states,
then flags held-out prompts from ../shared/data that none of the references contain: AdvBench and Do-Not-Answer
(harmful requests, imperatives and questions) and Alpaca and Dolly (benign). It also reports the share of the
Safety-Tuned LLaMAs pool (red-teaming instructions answered safely) flagged harmful.

    python benchmarks/harm_probe.py [--model PATH_OR_ID] [--references builtin:harm_intent,builtin:safety_probes]
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from datetime import date

import numpy as np
import torch
from _report import read_shared_jsonl as read_jsonl
from _report import write_section
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrainer import resolve_model_path
from safetrainer.samplers import HarmfulInstructionProbe, ModelEmbedder

MARK = "harm-probe"
HELD_OUT = {  # name -> (file under ../shared/data, harmful?)
    "AdvBench": ("advbench/advbench.norm.jsonl", True),
    "Do-Not-Answer": ("do_not_answer/do_not_answer.norm.jsonl", True),
    "Alpaca": ("alpaca/alpaca_data_1k.norm.jsonl", False),
    "Dolly": ("dolly/databricks_dolly_1k.norm.jsonl", False),
}
POOL = ("Safety-Tuned LLaMAs pool", "safety_tuned_llamas/safety_only_data_Instructions.norm.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model whose hidden states embed (default: SmolLM2-135M)")
    parser.add_argument("--references", default="builtin:harm_intent,builtin:safety_probes")
    parser.add_argument("--n", type=int, default=200, help="prompts drawn from each held-out set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/harm_probe.py", *sys.argv[1:]])
    torch.manual_seed(args.seed)
    model_path = args.model or resolve_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    embedder = ModelEmbedder(model, tokenizer, batch_size=16)

    rng = random.Random(args.seed)
    sets = {}
    for name, (path, _) in {**HELD_OUT, POOL[0]: (POOL[1], None)}.items():
        prompts = sorted({r["prompt"] for r in read_jsonl(path)})
        rng.shuffle(prompts)
        sets[name] = prompts[: args.n]

    references = args.references.split(",")
    flagged = {}
    for reference in references:
        probe = HarmfulInstructionProbe(embedder, reference)
        flagged[reference] = {name: float(np.mean(probe(prompts))) for name, prompts in sets.items()}
        print(reference, flagged[reference], flush=True)

    model_name = args.model or "SmolLM2-135M-Instruct"
    lines = [
        f"Command: `{command}`",
        "",
        f"The probe (logistic regression on the middle-layer mean instruction state of {model_name}, layer "
        f"{embedder.layer}) fit on each reference, then applied to {args.n} prompts drawn from each held-out set "
        f"(seed {args.seed}). Share flagged harmful; for the harmful sets higher is better, for the benign sets "
        "lower. The last column is the Safety-Tuned LLaMAs pool (red-teaming instructions, some mild), for scale. "
        f"Machine: CPU, {torch.get_num_threads()} torch threads; measured {date.today().isoformat()}.",
        "",
        "| reference | "
        + " | ".join(f"{n} ({'harmful' if h else 'benign'})" for n, (_, h) in HELD_OUT.items())
        + f" | {POOL[0]} |",
        "|---|" + "---|" * (len(HELD_OUT) + 1),
    ]
    for reference in references:
        lines.append(f"| {reference} | " + " | ".join(f"{v:.1%}" for v in flagged[reference].values()) + " |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(MARK, "Harmful-instruction probe: held-out flag rates", body)


if __name__ == "__main__":
    main()
