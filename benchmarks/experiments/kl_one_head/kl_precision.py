import torch, nas_llm.model.metrics as M
from nas_llm.model.loading import load_model
from nas_llm.model.data import calibration_batch
torch.set_num_threads(2)
model, tok = load_model("smollm2-135m")
ids = calibration_batch(tok, "wikitext2-valid", 2, 256, 1)
with torch.no_grad():
    r = M.final_hidden(model, ids)
    head = model.get_output_embeddings()
    print("head dtype", head.weight.dtype, "bias", head.bias is not None, "tied", head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr())
    for eps in (0.0, 0.01, 0.05):
        h = r + eps * torch.randn(r.shape, generator=torch.Generator().manual_seed(0))
        W = head.weight.double()
        lp = torch.log_softmax(r[:, :-1].double() @ W.T, -1); lq = torch.log_softmax(h[:, :-1].double() @ W.T, -1)
        want = (lp.exp() * (lp - lq)).sum(-1).sum(1)
        new = M.head_row_kl(h, r, head, 256)
        hr = M.head_reference(r, head, 256)
        # old
        hh, rr = h[:, :-1].reshape(-1, 576), r[:, :-1].reshape(-1, 576)
        logq = torch.log_softmax(head(hh).float(), -1); logp = torch.log_softmax(head(rr).float(), -1)
        old = (logp.exp() * (logp - logq)).sum(-1).double().view(2, -1).sum(1)
        print(eps, "want", (want / 255).tolist(), "new", (new / 255).tolist(), "old", (old / 255).tolist())
        # float64 checks of reference parts
        p64 = lp.exp().reshape(-1, W.shape[0])
        print("   negent err", (hr.neg_entropy.reshape(-1) - (p64 * lp.reshape(-1, W.shape[0])).sum(-1)).abs().max().item(),
              "meanrow err", (hr.mean_row.reshape(-1, 576) - p64 @ W).abs().max().item(), "psum", p64.sum(-1).min().item())
