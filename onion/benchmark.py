"""Training speed of our loop against a conventional pack_padded_sequence seq2seq loop."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from onion.config import DataConfig, TrainConfig
from onion.data import random_sequences
from onion.model import RepeatRNN
from onion.runtime import synchronize
from onion.training import make_optimizer, packed_batches, sequence_loss, train_step


def reference_step(model: RepeatRNN, optimizer, tokens: torch.Tensor, lengths: torch.Tensor):
    """The usual seq2seq update: packed encoder, packed decoder started from its final state."""
    cpu_lengths = lengths.cpu()
    packed = pack_padded_sequence(model.embedding(tokens), cpu_lengths, batch_first=True,
                                  enforce_sorted=False)
    _, h = model.rnn(packed)  # [1, B, N], back in the batch's order
    decoder_in = model.embedding(model.decoder_inputs(tokens))
    packed = pack_padded_sequence(decoder_in, cpu_lengths, batch_first=True, enforce_sorted=False)
    out, _ = model.rnn(packed, h)
    out, _ = pad_packed_sequence(out, batch_first=True)  # [B, max L, N]
    targets = tokens[:, :out.shape[1]]
    loss = sequence_loss(model.readout(out), targets, lengths)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def benchmark_training(sizes, steps: int, device, rounds: int = 4, seed: int = 0) -> pd.DataFrame:
    """steps/s of train_step and reference_step per size, interleaved in rounds so that both
    loops see the same machine load. Batches are the paper's (256 sequences, lengths 2-9)."""
    data_cfg, train_cfg = DataConfig(), TrainConfig()
    data = random_sequences(np.random.default_rng(seed), steps * train_cfg.batch_size, data_cfg)
    rows = []
    for size in sizes:
        elapsed = {"ours": 0.0, "pack_padded_reference": 0.0}
        for name in elapsed:  # warm-up
            _time_loop(name, size, data, 5, train_cfg, device)
        for _ in range(rounds):
            for name in elapsed:
                elapsed[name] += _time_loop(name, size, data, steps // rounds,
                                            train_cfg, device)
        done = rounds * (steps // rounds)
        ours, ref = done / elapsed["ours"], done / elapsed["pack_padded_reference"]
        rows.append({"size": size, "device": str(device), "threads": torch.get_num_threads(),
                     "steps": done, "ours_steps_per_s": ours, "reference_steps_per_s": ref,
                     "speedup": ours / ref})
    return pd.DataFrame(rows)


def _time_loop(name, size, data, steps, cfg: TrainConfig, device) -> float:
    torch.manual_seed(0)
    model = RepeatRNN(30, size).to(device)
    if name == "ours":
        optimizer, step_fn = make_optimizer(model.parameters(), cfg), train_step
    else:  # the plain loop: default (for-each) AdamW
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      betas=cfg.betas)
        step_fn = reference_step
    batch = cfg.batch_size
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        sl = slice(i * batch, (i + 1) * batch)
        step_fn(model, optimizer, tokens[sl], lengths[sl])
    synchronize(device)
    return time.perf_counter() - start

