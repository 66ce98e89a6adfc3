"""Proxy: is the sensitivity table's forward faster per token when the 6 cuts of a layer share one batch
(24 x 256 tokens) instead of 6 batches of 4 x 256? Dense model, all layers + chunked head logsumexp.

    flock /tmp/nasllm-heavy.lock python benchmarks/experiments/table_batching/batch_ab.py
"""
import json
import statistics
import time

import torch

from nas_llm.model.loading import load_model

torch.set_num_threads(2)
model, _ = load_model("smollm2-135m")
model.eval()
head = model.get_output_embeddings()
ids = torch.randint(0, 49152, (24, 256), generator=torch.Generator().manual_seed(0))


def run(batch: int) -> None:
    """All 24 sequences in batches of ``batch``; the head in chunks of 256 tokens, as the table scores them."""
    with torch.no_grad():
        for s in range(0, 24, batch):
            h = model.base_model(input_ids=ids[s:s + batch], use_cache=False).last_hidden_state
            h = h[:, :-1].reshape(-1, h.shape[-1])
            for c in range(0, h.shape[0], 256):
                torch.logsumexp(head(h[c:c + 256]), -1)


run(4)  # warm-up
res: dict[int, list[float]] = {4: [], 24: []}
for _ in range(4):  # interleaved rounds
    for batch in (4, 24):
        t = time.perf_counter()
        run(batch)
        res[batch].append(time.perf_counter() - t)
print(json.dumps(res))
m4, m24 = statistics.median(res[4]), statistics.median(res[24])
print("median 6x4:", m4, "1x24:", m24, "ratio", m24 / m4)
