"""The unrolled GRU kernel (onion.model.unrolled) against nn.GRU: the same loss and gradients for
the same weights and batch, odd lengths and padding included; training with it; the eager fallback."""

import numpy as np
import pytest
import torch

from onion.config import DataConfig, TrainConfig
from onion.data import SequenceSet, make_datasets, random_sequences
from onion.model import RepeatRNN
from onion.model import unrolled
from onion.training import pack_plan, packed_batch_loss, padded_batches, sequence_table, train_model


def _batch(n: int, lengths=None, seed: int = 0) -> SequenceSet:
    cfg = DataConfig(max_length=9)
    data = random_sequences(np.random.default_rng(seed), n, cfg)
    if lengths is not None:
        data = random_sequences(np.random.default_rng(seed), n, cfg, length=lengths)
    return data


def _packed_and_unrolled(model: RepeatRNN, data: SequenceSet):
    params = list(model.parameters())
    inputs, targets = sequence_table(model, torch.as_tensor(data.tokens), torch.as_tensor(data.lengths))
    positions, sizes = pack_plan(np.arange(len(data)), data.lengths, inputs.shape[1])
    packed = packed_batch_loss(model, inputs.flatten()[positions], targets.flatten()[positions], sizes)
    padded = padded_batches(model, data, "cpu")(np.arange(len(data)))
    eager = unrolled.teacher_forced_loss(*unrolled.model_tensors(model), *padded)
    return (packed, torch.autograd.grad(packed, params)), (eager, torch.autograd.grad(eager, params))


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
@pytest.mark.parametrize("lengths", [None, 2, 9])  # mixed (odd) lengths with padding; none; all padding
def test_loss_and_every_gradient_equal_nn_grus(variant, lengths):
    torch.manual_seed(1)
    model = RepeatRNN(30, 12, variant)
    (packed, packed_grads), (eager, eager_grads) = _packed_and_unrolled(model, _batch(37, lengths))
    torch.testing.assert_close(eager, packed, rtol=1e-5, atol=1e-6)
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, eager_grads, packed_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_a_wrong_kernel_is_caught():
    """The comparison can fail: a GRU step with the update gate's roles swapped differs."""
    torch.manual_seed(1)
    model = RepeatRNN(30, 12)
    data = _batch(37)
    real = unrolled.gru_states

    def swapped(table, inputs, h, weight_hh, bias_hh):
        return real(table, inputs, h, weight_hh.flip(0), bias_hh)

    unrolled.gru_states = swapped
    try:
        (packed, _), (eager, _) = _packed_and_unrolled(model, data)
    finally:
        unrolled.gru_states = real
    assert abs(float(packed) - float(eager)) > 1e-3


def test_the_unrolled_kernel_is_for_the_gru():
    with pytest.raises(ValueError, match="GRU"):
        unrolled.model_tensors(RepeatRNN(30, 8, cell="lstm"))


def test_training_with_the_compiled_kernel_learns_and_matches_the_eager_loss():
    """Compiled at a small shape (lengths up to 3: 6 steps), one compilation for the whole run."""
    cfg = DataConfig(n_symbols=5, min_length=2, max_length=3, n_train=120, n_valid=20, das_length=3,
                     n_das_valid=10, n_das_train=20)
    train, valid = make_datasets(cfg)
    torch.manual_seed(0)
    model = RepeatRNN(5, 8)
    batch = padded_batches(model, train, "cpu")(np.arange(16))
    compiled = unrolled.compiled_loss()
    torch.testing.assert_close(compiled(*unrolled.model_tensors(model), *batch),
                               unrolled.teacher_forced_loss(*unrolled.model_tensors(model), *batch))
    record = train_model(model, train, valid, TrainConfig(steps=150, batch_size=16, lr=0.01, log_every=50,
                                                          eval_every=0, kernel="unrolled"), 0, "cpu")
    assert record["finished"] and record["final_loss"] < 1.0 and record["first_step_seconds"] > 0


def test_without_a_compiler_the_eager_loop_runs_and_says_so(monkeypatch, capsys):
    def broken(function, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler found")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    model = RepeatRNN(30, 8)
    batch = padded_batches(model, _batch(8), "cpu")(np.arange(8))
    loss = unrolled.compiled_loss()(*unrolled.model_tensors(model), *batch)
    assert torch.equal(loss, unrolled.teacher_forced_loss(*unrolled.model_tensors(model), *batch))
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in capsys.readouterr().err
