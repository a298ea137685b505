import dataclasses

import numpy as np
import pytest
import torch

from onion.config import DataConfig, TrainConfig
from onion.data import make_datasets
from onion.evaluation import accuracy_summary, evaluate_model
from onion.loop import BOOKKEEPING
from onion.model import RepeatRNN
from onion.training import batch_indices, train_model

TINY_DATA = DataConfig(n_symbols=6, min_length=2, max_length=4, n_train=5000, n_valid=100, seed=0,
                       train_sampling="iid", das_length=4)


def test_batches_cover_each_epoch_once():
    n, batch = 50, 8
    seen = np.concatenate([batch_indices(s, batch, n, seed=0) for s in range(25)])  # 200 = 4 epochs
    for epoch in range(4):
        assert sorted(seen[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(batch_indices(0, batch, n, seed=0), batch_indices(0, batch, n, seed=1))


def test_training_learns_a_small_repeat_task():
    train, valid = make_datasets(TINY_DATA)
    cfg = TrainConfig(steps=800, batch_size=64, lr=3e-3, eval_every=0, checkpoint_every=0, log_every=400)
    for variant in ("autoregressive", "no_input"):
        torch.manual_seed(0)
        model = RepeatRNN(TINY_DATA.n_symbols, 32, variant)
        before = evaluate_model(model, valid, "cpu")["exact_match"]
        train_model(model, train, valid, cfg, seed=0, device=torch.device("cpu"))
        after = evaluate_model(model, valid, "cpu")["exact_match"]
        assert before < 0.2 and after > 0.7, (variant, before, after)  # chance is ~0.01


def test_killed_run_resumes_to_the_same_model_and_record(tmp_path):
    """Killed after step 50 (checkpoints every 20), resumed from 40; then run again once finished, as
    a job killed after its last checkpoint but before its result: the weights bit for bit and every
    field of the record but the bookkeeping (final_loss included) as an uninterrupted run's."""
    train, valid = make_datasets(TINY_DATA)
    cfg = TrainConfig(steps=60, batch_size=32, checkpoint_every=20, eval_every=0, log_every=20)
    cpu = torch.device("cpu")

    torch.manual_seed(0)
    straight = RepeatRNN(6, 16)
    expected = train_model(straight, train, valid, cfg, seed=0, device=cpu)

    torch.manual_seed(0)
    killed = RepeatRNN(6, 16)
    first = train_model(killed, train, valid, cfg, seed=0, device=cpu,
                        checkpoint_path=tmp_path / "ck.pt", stop_after=50)  # dies after step 50
    assert not first["finished"] and (tmp_path / "ck.pt").exists()
    for resumed_from, steps_this_run in ((40, 20), (60, 0)):
        torch.manual_seed(123)  # a fresh process: other initial weights, restored from the checkpoint
        resumed = RepeatRNN(6, 16)
        record = train_model(resumed, train, valid, cfg, seed=0, device=cpu, checkpoint_path=tmp_path / "ck.pt")
        assert (record["resumed_from"], record["steps_this_run"]) == (resumed_from, steps_this_run)
        assert result_fields(record) == result_fields(expected) and record["final_loss"] is not None
        for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def result_fields(record: dict) -> dict:
    """A training record without its bookkeeping (what may differ after a resume)."""
    return {k: v for k, v in record.items() if k not in BOOKKEEPING}


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    train, valid = make_datasets(TINY_DATA)
    cfg = TrainConfig(steps=20, batch_size=16, checkpoint_every=10, eval_every=0)
    cpu = torch.device("cpu")
    train_model(RepeatRNN(6, 16), train, valid, cfg, 0, cpu, tmp_path / "ck.pt", stop_after=10)
    other = dataclasses.replace(cfg, lr=5e-4)
    record = train_model(RepeatRNN(6, 16), train, valid, other, 0, cpu, tmp_path / "ck.pt")
    assert record["resumed_from"] == 0


def test_accuracy_summary_counts_only_real_tokens():
    target = np.array([[1, 2, 0], [3, 4, 5]])
    pred = np.array([[1, 2, 9], [3, 0, 5]])  # row 0 right (pad ignored), row 1 wrong at position 1
    summary = accuracy_summary(pred, target, np.array([2, 3]), groups={"kind": np.array([7, 8])})
    assert summary["exact_match"] == 0.5
    assert summary["per_position"] == {0: 1.0, 1: 0.5, 2: 1.0}
    assert summary["per_length"] == {2: 1.0, 3: 0.0}
    assert summary["per_kind"] == {7: 1.0, 8: 0.0}


@pytest.mark.slow  # compiles the training step at two sizes: minutes on a cold cache
def test_benchmark_training_command_runs(capsys, tmp_path):
    from onion.cli import main
    assert main(["benchmark-training", "--sizes", "8", "--steps", "4", "--rounds", "2", "--cells", "rnn_tanh",
                 "--out", str(tmp_path / "b.csv")]) == 0
    table = capsys.readouterr().out
    assert "nn_steps_per_s" in table and "unrolled_compile_s" in table
    rows = (tmp_path / "b.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("rnn_tanh,8,cpu,")


def _reference_packed_loss(model, tokens, lengths):
    """The loss as pack_padded_sequence builds the batch (the earlier, per-step-synchronising path)."""
    from torch.nn.functional import cross_entropy
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
    width = int(lengths.max())
    tokens = tokens[:, :width]
    steps = torch.arange(2 * width)[None, :]
    in_input = steps < lengths[:, None]
    out_pos = (steps - lengths[:, None]).clamp(0, width - 1)
    seq = torch.where(in_input, tokens.repeat(1, 2), model.decoder_inputs(tokens).gather(1, out_pos))
    target = torch.where(in_input, torch.full_like(seq, -100), tokens.gather(1, out_pos))
    packed = pack_padded_sequence(torch.stack([seq, target], -1), 2 * lengths, batch_first=True,
                                  enforce_sorted=False)
    seq_p, target_p = packed.data.unbind(-1)
    states, _ = model.rnn(PackedSequence(model.embedding(seq_p), packed.batch_sizes,
                                         packed.sorted_indices, packed.unsorted_indices))
    return cross_entropy(model.readout(states.data), target_p, ignore_index=-100)


def test_device_built_batches_train_bit_identically_to_pack_padded_sequence():
    """The loop uploads only pack_plan's positions each step; on the CPU the weights it trains are
    bit for bit those of the per-step pack_padded_sequence loop."""
    train, valid = make_datasets(TINY_DATA)
    cfg = TrainConfig(steps=40, batch_size=32, eval_every=0, checkpoint_every=0, log_every=20)
    torch.manual_seed(0)
    ours = RepeatRNN(6, 16)
    reference = RepeatRNN(6, 16)
    reference.load_state_dict(ours.state_dict())
    train_model(ours, train, valid, cfg, seed=0, device=torch.device("cpu"))
    from onion.training import make_optimizer
    optimizer = make_optimizer(reference.parameters(), cfg)
    tokens, lengths = torch.as_tensor(train.tokens), torch.as_tensor(train.lengths)
    for step in range(cfg.steps):
        idx = torch.as_tensor(batch_indices(step, cfg.batch_size, len(train), 0))
        loss = _reference_packed_loss(reference, tokens[idx], lengths[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def test_pack_plan_orders_like_pack_padded_sequence():
    from torch.nn.utils.rnn import pack_padded_sequence
    from onion.training import pack_plan
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 10, size=100)
    idx = rng.integers(0, 100, size=40)
    table = torch.arange(100 * 18).view(100, 18)  # each entry names its own (row, step)
    positions, batch_sizes = pack_plan(idx, lengths, 18)
    packed = pack_padded_sequence(table[idx], torch.as_tensor(2 * lengths[idx]), batch_first=True,
                                  enforce_sorted=False)
    assert torch.equal(table.flatten()[positions], packed.data)
    assert torch.equal(batch_sizes, packed.batch_sizes)
