"""Proxy: is the sensitivity table's forward faster per token when the 6 cuts of a layer share one batch
(24 x 256 tokens) instead of 6 batches of 4 x 256? Dense model, all layers + chunked head logsumexp."""
import time, json, torch
from nas_llm.model.loading import load_model
torch.set_num_threads(2)
m, tok = load_model("smollm2-135m"); m.eval()
head = m.get_output_embeddings()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, 49152, (24, 256), generator=g)
def run(bs):
    with torch.no_grad():
        for s in range(0, 24, bs):
            h = m.base_model(input_ids=ids[s:s+bs], use_cache=False).last_hidden_state
            h = h[:, :-1].reshape(-1, h.shape[-1])
            for c in range(0, h.shape[0], 256):
                torch.logsumexp(head(h[c:c+256]), -1)
run(4)
res = {4: [], 24: []}
for r in range(4):
    for bs in (4, 24):
        t = time.perf_counter(); run(bs); res[bs].append(time.perf_counter() - t)
print(json.dumps(res)); import statistics as st
print("median 6x4:", st.median(res[4]), "1x24:", st.median(res[24]), "ratio", st.median(res[24]) / st.median(res[4]))
