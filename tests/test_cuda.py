"""The GPU path: every path a CUDA tensor can take, against to_torch() (cuDNN),
in float32 and under autocast; the language model for a few steps. Skipped
cleanly without CUDA; the device-mismatch check also runs on the CPU (meta)."""

import pytest
import torch

import rrnn
from rrnn.lm.model import ModelConfig, RNNModel

CELLS = (rrnn.RestrictedRNN, rrnn.RestrictedGRU, rrnn.RestrictedLSTM)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("cls", CELLS)
def test_input_on_another_device_is_torchs_kind_of_error(cls):
    m = cls(4, 4, 2, sharing_rate=0.5).to("meta")
    with pytest.raises(RuntimeError, match="not on the same device: input is on cpu"):
        m(torch.randn(3, 2, 4))
    cpu = cls(4, 4, 2, sharing_rate=0.5)
    h = torch.zeros(2, 2, 4, device="meta")
    with pytest.raises(RuntimeError, match="h0 is on meta, the parameters on cpu"):
        cpu(torch.randn(3, 2, 4), (h, h) if cls is rrnn.RestrictedLSTM else h)


@cuda
@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [1, 7])
def test_cuda_outputs_and_gradients_match_torch_nn(cls, rate, steps):
    torch.manual_seed(0)
    m = cls(16, 24, 2, sharing_rate=rate).cuda()
    ref = m.to_torch()
    x = torch.randn(steps, 5, 16, device="cuda", requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    out, ref_out = m(x)[0], ref(xr)[0]
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with torch.no_grad():  # the streaming path (one step, no autograd)
        step = x[:1].detach()
        torch.testing.assert_close(m(step)[0], ref(step)[0], rtol=1e-4, atol=1e-5)


@cuda
@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_matches_torch_nn(cls, dtype):
    torch.manual_seed(0)
    m = cls(16, 24, 2, sharing_rate=0.5).cuda()
    ref = m.to_torch()
    x = torch.randn(6, 5, 16, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        out, ref_out = m(x)[0], ref(x)[0]
    assert out.dtype == ref_out.dtype
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=2e-2, atol=2e-2)


@cuda
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_cuda_language_model_trains(cell):
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=50, cell=cell, sharing_rate=0.5, embedding_size=16,
                                 hidden_size=16, tie_weights=True)).cuda()  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tokens = torch.randint(0, 50, (9, 4), device="cuda")
    losses = []
    for _ in range(20):
        hidden = model.init_hidden(4)
        logits, _ = model(tokens[:-1], hidden)
        loss = torch.nn.functional.cross_entropy(logits, tokens[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
