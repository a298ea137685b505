import pytest
import torch

from onion.data import no_input_token, sos_token
from onion.model import RepeatRNN, load_model, save_model
from onion.model import sequence_loss
from onion.training import packed_loss


def _batch(n=16, width=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width + 1, (n,), generator=g)
    tokens = torch.randint(0, 30, (n, width), generator=g)
    return tokens * (torch.arange(width)[None, :] < lengths[:, None]), lengths


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_shapes(variant):
    model = RepeatRNN(30, 12, variant)
    tokens, lengths = _batch()
    h = model.encode(tokens, lengths)
    assert h.shape == (16, 12)
    assert model.decode(h, model.decoder_inputs(tokens)).shape == (16, 9, 30)
    assert model(tokens, lengths).shape == (16, 9, 30)
    out = model.generate(h, 9)
    assert out.shape == (16, 9) and out.dtype == torch.long and out.max() < 30


def test_decoder_inputs_of_the_two_variants():
    targets = torch.tensor([[3, 4, 5]])
    ar = RepeatRNN(30, 8, "autoregressive").decoder_inputs(targets)
    ni = RepeatRNN(30, 8, "no_input").decoder_inputs(targets)
    assert ar.tolist() == [[sos_token(30), 3, 4]]
    assert ni.tolist() == [[sos_token(30), no_input_token(30), no_input_token(30)]]


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_padded_batch_gives_each_sequence_its_own_final_state(variant):
    torch.manual_seed(0)
    model = RepeatRNN(30, 16, variant)
    tokens, lengths = _batch(n=12)
    batched = model.encode(tokens, lengths)
    for i in range(len(lengths)):
        alone = model.encode(tokens[i:i + 1, :lengths[i]], lengths[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_greedy_generation_matches_teacher_forcing_on_its_own_outputs(variant):
    torch.manual_seed(1)
    model = RepeatRNN(30, 16, variant)
    tokens, lengths = _batch()
    h = model.encode(tokens, lengths)
    out = model.generate(h, 9)
    forced = model.decode(h, model.decoder_inputs(out)).argmax(-1)
    assert torch.equal(out, forced)


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_packed_loss_equals_padded_loss(variant):
    torch.manual_seed(2)
    model = RepeatRNN(30, 16, variant)
    tokens, lengths = _batch(n=32)
    padded = sequence_loss(model(tokens, lengths), tokens, lengths)
    torch.testing.assert_close(packed_loss(model, tokens, lengths), padded, rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(loss, model.rnn.weight_hh_l0)[0] for loss in
             (sequence_loss(model(tokens, lengths), tokens, lengths), packed_loss(model, tokens, lengths))]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_save_and_load(tmp_path):
    model = RepeatRNN(30, 8, "no_input")
    save_model(model, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.variant == "no_input" and back.hidden_size == 8
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert not any(p.requires_grad for p in back.parameters())


def test_corrupt_model_file_is_named(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(tmp_path / "bad.pt")


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        RepeatRNN(30, 8, "bidirectional")
    with pytest.raises(ValueError, match="hidden_size"):
        RepeatRNN(30, -1)
