"""The unrolled kernel (onion.model.unrolled) against torch.nn's GRU, LSTM and tanh RNN: the same
loss and gradients for the same weights and batch, odd lengths and padding included, in training,
in the interventions' steps on the frozen model and in the GRU probes; training with it; which jobs
use it; the eager fallback."""

import shutil

import numpy as np
import pytest
import torch

from onion.config import DataConfig, TrainConfig
from onion.interventions import InterventionConfig, intervention_step, make_intervention
from onion.data import SequenceSet, make_datasets, random_sequences
from onion.model import RepeatRNN
from onion.model import unrolled
from onion.probes import ProbeConfig, make_probe, train_probe
from onion.runtime import FALLBACKS
from onion.training import make_optimizer, packed_batch_loss, packed_batches, train_model, unrolled_batch_loss


def _batch(n: int, lengths=None, seed: int = 0) -> SequenceSet:
    cfg = DataConfig(max_length=9)
    data = random_sequences(np.random.default_rng(seed), n, cfg)
    if lengths is not None:
        data = random_sequences(np.random.default_rng(seed), n, cfg, length=lengths)
    return data


def _packed(model: RepeatRNN, data: SequenceSet, idx=None):
    """The packed batch of examples idx (default: all): (inputs, targets, batch_sizes)."""
    return packed_batches(model, data, "cpu")(np.arange(len(data)) if idx is None else idx)


def _packed_and_unrolled(model: RepeatRNN, data: SequenceSet):
    params = list(model.parameters())
    batch = _packed(model, data)
    packed = packed_batch_loss(model, *batch)
    eager = unrolled_batch_loss(model, unrolled.packed_loss, *batch)
    return (packed, torch.autograd.grad(packed, params)), (eager, torch.autograd.grad(eager, params))


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
@pytest.mark.parametrize("lengths", [None, 2, 9])  # mixed (odd) lengths: a shrinking batch; all short; all long
def test_loss_and_every_gradient_equal_torch_nns(cell, variant, lengths):
    torch.manual_seed(1)
    model = RepeatRNN(30, 12, variant, cell)
    (packed, packed_grads), (eager, eager_grads) = _packed_and_unrolled(model, _batch(37, lengths))
    torch.testing.assert_close(eager, packed, rtol=1e-5, atol=1e-6)
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, eager_grads, packed_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
def test_a_wrong_kernel_is_caught(cell, monkeypatch):
    """The comparison can fail: a step with its gate blocks in the wrong order differs."""
    torch.manual_seed(1)
    model = RepeatRNN(30, 12, cell=cell)
    real = unrolled.CELL_UPDATES[cell]
    monkeypatch.setitem(unrolled.CELL_UPDATES, cell, lambda gi, state, w, b, precision: real(gi, state, w.flip(0), b, precision))
    (packed, packed_grads), (eager, eager_grads) = _packed_and_unrolled(model, _batch(37))
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6)  # the known-answer test's tolerances
                   for a, b in zip((eager, *eager_grads), (packed, *packed_grads)))


def test_training_with_the_compiled_kernel_learns_and_matches_the_eager_loss_and_gradients():
    """Compiled at a small shape (lengths up to 3: 6 steps); batches whose examples stop at
    different steps (other batch sizes b_t) reuse the one compilation, and give the eager loop's
    loss and gradients. Where a C++ compiler exists (CI has gcc), compilation must have happened:
    a silent fallback to the eager loop would pass the comparisons."""
    cfg = DataConfig(n_symbols=5, min_length=2, max_length=3, n_train=120, n_valid=20, das_length=3,
                     n_das_valid=10, n_das_train=20)
    train, valid = make_datasets(cfg)
    torch.manual_seed(0)
    model = RepeatRNN(5, 8)
    params = list(model.parameters())
    compiled, fallbacks = unrolled.compiled_loss(), len(FALLBACKS)
    by_length = [np.flatnonzero(train.lengths == length) for length in (2, 3)]
    sizes_seen, graphs = set(), torch._dynamo.utils.counters["stats"]
    for n_long in (5, 9, 12):  # 16 examples, n_long of length 3: batch sizes [16] * 4 + [n_long] * 2
        batch = _packed(model, train, np.concatenate([by_length[1][:n_long], by_length[0][:16 - n_long]]))
        sizes_seen.add(tuple(batch[2].tolist()))
        ours, eager = (unrolled_batch_loss(model, loss, *batch) for loss in (compiled, unrolled.packed_loss))
        torch.testing.assert_close(ours, eager)
        for name, a, b in zip([n for n, _ in model.named_parameters()], torch.autograd.grad(ours, params),
                              torch.autograd.grad(eager, params)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
        if n_long == 5:
            compiled_graphs = graphs["unique_graphs"]
    assert len(sizes_seen) == 3 and graphs["unique_graphs"] == compiled_graphs  # no recompilation
    if any(shutil.which(compiler) for compiler in ("g++", "c++", "clang++")):
        assert compiled_graphs > 0 and len(FALLBACKS) == fallbacks, FALLBACKS[fallbacks:]
    record = train_model(model, train, valid, TrainConfig(steps=150, batch_size=16, lr=0.01, log_every=50,
                                                          eval_every=0), 0, "cpu", kernel="unrolled")
    assert record["finished"] and record["final_loss"] < 1.0 and record["first_step_seconds"] > 0


def test_without_a_compiler_the_eager_loop_runs_and_says_so(no_compiler, capsys):
    torch.manual_seed(0)
    model = RepeatRNN(30, 8)
    batch = _packed(model, _batch(8))
    loss = unrolled_batch_loss(model, unrolled.compiled_loss(), *batch)
    assert torch.equal(loss, unrolled_batch_loss(model, unrolled.packed_loss, *batch))
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_the_frozen_model_encodes_and_decodes_as_torch_nn(cell, variant):
    """Interventions' steps: final states (the LSTM's [h, c]), and the decoder loss and its gradient
    with respect to the (intervened) state, equal the model's own torch.nn methods on mixed lengths."""
    torch.manual_seed(2)
    model = RepeatRNN(30, 12, variant, cell)
    data = _batch(41)
    tokens, lengths = torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)
    fast = unrolled.UnrolledRepeatModel(model, compile=False)
    torch.testing.assert_close(fast.encode(tokens, lengths), model.encode(tokens, lengths), rtol=1e-5, atol=1e-6)
    h = torch.randn(41, model.state_size, requires_grad=True)
    ours, theirs = fast.decode_loss(h, tokens, lengths), model.decode_loss(h, tokens, lengths)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(ours, h)[0], torch.autograd.grad(theirs, h)[0],
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind,cell", [("linear_bigram", "gru"), ("onion", "gru"), ("onion", "lstm")])
def test_an_intervention_step_updates_as_with_torch_nn(kind, cell):
    """One training step of an intervention on the frozen model through either kernel: the same
    loss and the same updated intervention parameters."""
    torch.manual_seed(3)
    model = RepeatRNN(30, 12, cell=cell)
    for p in model.parameters():
        p.requires_grad_(False)
    data = _batch(64, lengths=9)
    tokens, lengths = torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)
    results = []
    for runner in (model, unrolled.UnrolledRepeatModel(model, compile=False)):
        torch.manual_seed(0)
        intervention = make_intervention(kind, 30, model.state_size, 9)
        optimizer = make_optimizer(intervention.parameters(), InterventionConfig(lr=0.01))
        loss = intervention_step(runner, intervention, optimizer, kind, tokens, lengths, 32, 0, 0)
        results.append((loss, [p.detach().clone() for p in intervention.parameters()]))
    (loss_nn, params_nn), (loss_unrolled, params_unrolled) = results
    torch.testing.assert_close(loss_unrolled, loss_nn, rtol=1e-5, atol=1e-6)
    for a, b in zip(params_unrolled, params_nn):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["gru_autoregressive", "gru_no_input"])
def test_gru_probes_lose_and_learn_as_with_nn_grus(kind):
    torch.manual_seed(4)
    data = _batch(37)
    tokens, lengths = torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)
    h = torch.randn(37, 12)
    probe = make_probe(kind, 12, 30, 9)
    params = list(probe.parameters())
    theirs = probe.loss(h, tokens, lengths)
    grads_nn = torch.autograd.grad(theirs, params, allow_unused=True)
    probe.unroll(compile=False)
    ours = probe.loss(h, tokens, lengths)
    grads_unrolled = torch.autograd.grad(ours, params, allow_unused=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(probe.named_parameters(), grads_unrolled, grads_nn):
        assert (a is None) == (b is None), name  # the no-input probe's embedding is unused by both
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_which_jobs_run_unrolled():
    assert unrolled.use_unrolled("auto", "cpu")
    assert not unrolled.use_unrolled("auto", "cuda")  # cuDNN's fused layers there
    assert not unrolled.use_unrolled("nn", "cpu")
    assert unrolled.use_unrolled("unrolled", "cuda")
    assert unrolled.use_unrolled("unrolled", torch.device("cpu"))


def test_a_compiled_gru_probe_trains_like_the_nn_one():
    """Compiled at a small shape (N = 16, 3 positions), on states that hold the tokens one-hot:
    120 steps either way land on the same, low loss."""
    cfg = DataConfig(n_symbols=5, min_length=2, max_length=3, das_length=3)
    data = random_sequences(np.random.default_rng(0), 200, cfg)
    h = np.zeros((200, 16), np.float32)
    h[:, :15] = np.eye(5, dtype=np.float32)[data.tokens].reshape(200, 15)  # padding reads as symbol 0
    probe_cfg = ProbeConfig(steps=120, batch_size=32, lr=0.02, log_every=60)
    losses = {kernel: train_probe("gru_autoregressive", h, data, 5, probe_cfg, 0, "cpu", kernel=kernel)[1]["final_loss"]
              for kernel in ("nn", "unrolled")}
    assert losses["unrolled"] == pytest.approx(losses["nn"], rel=1e-3, abs=1e-4)
    assert losses["nn"] < 1.0
