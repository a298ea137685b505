"""The repeat-task model: one recurrent layer shared by encoder and decoder (PAPER.md §3).

The paper's model is a GRU; `cell` also offers torch.nn's LSTM and tanh RNN, to ask whether other
recurrent cells store sequences as onions. "The state" is what the decoder starts from: h for the GRU
and the tanh RNN, the concatenation [h; c] of the LSTM (2N numbers); interventions and probes act on
it (`state_size`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from onion.data import no_input_token, sos_token
from onion.files import save_torch
from onion.model.cells import make_cell
from onion.names import VARIANTS
from onion.runtime import NonFiniteError


def ignore_padding(targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """targets [B, T] with -100 (cross-entropy's ignore_index) after each row's length [B].

    Padding is ignored by index, not cut out by a boolean mask, so no step waits for the GPU.
    """
    mask = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
    return targets.masked_fill(~mask, -100)


def packing(steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """pack_padded_sequence's layout (enforce_sorted=False) for sequences of steps [B] (int64, on
    the CPU): examples sorted by decreasing length, then time-major. -> (order [B], the examples
    longest first; slot, t [sum steps], the sorted example and the time step of each packed entry;
    batch_sizes [max steps], how many examples run at each step)."""
    sorted_steps, order = torch.sort(steps, descending=True)
    inside = torch.arange(int(sorted_steps[0]))[:, None] < sorted_steps[None, :]  # [S, B]
    t, slot = inside.nonzero(as_tuple=True)  # row-major: time-major
    return order, slot, t, inside.sum(1)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the real output tokens: logits [B, T, V], targets [B, T], lengths [B]."""
    return F.cross_entropy(logits.flatten(0, 1), ignore_padding(targets, lengths).flatten(),
                           ignore_index=-100)


class RepeatRNN(nn.Module):
    """Embedding -> recurrent layer (N, N) -> Linear(N, n_symbols); the same layer encodes and decodes.

    Token ids: 0..n_symbols-1 symbols, n_symbols = SOS, n_symbols + 1 = "no input".
    """

    def __init__(self, n_symbols: int, hidden_size: int, variant: str = "autoregressive",
                 cell: str = "gru"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        self.n_symbols, self.hidden_size, self.variant, self.cell = n_symbols, hidden_size, variant, cell
        self.embedding = nn.Embedding(n_symbols + 2, hidden_size)
        self.rnn = make_cell(cell, hidden_size)
        self.readout = nn.Linear(hidden_size, n_symbols)
        self.state_size = 2 * hidden_size if cell == "lstm" else hidden_size

    def hyperparameters(self) -> dict:
        return {"n_symbols": self.n_symbols, "hidden_size": self.hidden_size, "variant": self.variant,
                "cell": self.cell}

    def layer_state(self, state: torch.Tensor):
        """The layer's own initial-state form of states [B, state_size]: [1, B, N], or (h, c) for the LSTM."""
        if self.cell == "lstm":
            h, c = state.split(self.hidden_size, dim=-1)
            return h[None].contiguous(), c[None].contiguous()
        return state[None].contiguous()

    def flat_state(self, layer_state) -> torch.Tensor:
        """The inverse of layer_state: -> [B, state_size]."""
        if self.cell == "lstm":
            return torch.cat([layer_state[0][0], layer_state[1][0]], dim=-1)
        return layer_state[0]

    def encode_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """The state after every input token: [B, T] -> [B, T, state_size], from the zero state."""
        embedded = self.embedding(tokens)
        if self.cell != "lstm":
            states, _ = self.rnn(embedded)
            return states
        # the LSTM returns only h per step; its cell state c is read step by step
        states, layer_state = [], None
        for t in range(tokens.shape[1]):
            _, layer_state = self.rnn(embedded[:, t:t + 1], layer_state)
            states.append(self.flat_state(layer_state))
        return torch.stack(states, dim=1)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final state of each sequence: tokens [B, T] (padded after L), lengths [B] -> [B, state_size].

        Padding sits after the last real token, so states up to L are exactly those of the
        sequence alone; we run the padded batch and pick step L - 1 of each row. The LSTM's layer
        returns c only at the end, so it runs packed (one call, not one per step; on CUDA packing
        reads the lengths on the host, so each call waits for them).
        """
        if self.cell == "lstm":
            packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            return self.flat_state(self.rnn(packed)[1])  # (h, c) at each row's own last step
        states = self.encode_all(tokens)
        return states[torch.arange(len(lengths), device=tokens.device), lengths - 1]

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs: [B, T] targets -> [B, T] inputs starting with SOS."""
        inputs = torch.full_like(targets, no_input_token(self.n_symbols))
        inputs[:, 0] = sos_token(self.n_symbols)
        if self.variant == "autoregressive":
            inputs[:, 1:] = targets[:, :-1]
        return inputs

    def decode(self, state: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of each output step: state [B, state_size], inputs [B, T] -> [B, T, n_symbols]."""
        outputs, _ = self.rnn(self.embedding(inputs), self.layer_state(state))
        return self.readout(outputs)

    def decode_loss(self, state: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the teacher-forced decoder from state [B, state_size] on targets
        [B, T] with lengths [B] (onion.model.unrolled.UnrolledRepeatModel has the same method)."""
        return sequence_loss(self.decode(state, self.decoder_inputs(targets)), targets, lengths)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced output logits [B, T, n_symbols] for inputs tokens [B, T]."""
        return self.decode(self.encode(tokens, lengths), self.decoder_inputs(tokens))

    @torch.no_grad()
    def generate(self, state: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy decoding from final states [B, state_size] -> tokens [B, steps]."""
        batch = state.shape[0]
        if self.variant == "no_input":  # inputs do not depend on outputs: one call
            inputs = self.decoder_inputs(torch.zeros(batch, steps, dtype=torch.long, device=state.device))
            return self.decode(state, inputs).argmax(-1)
        layer_state = self.layer_state(state)
        token = torch.full((batch, 1), sos_token(self.n_symbols), dtype=torch.long, device=state.device)
        outputs = []
        for _ in range(steps):
            out, layer_state = self.rnn(self.embedding(token), layer_state)
            token = self.readout(out).argmax(-1)  # [B, 1]
            outputs.append(token)
        return torch.cat(outputs, dim=1)


def check_finite(tensors: dict, what: str) -> None:
    """Raise NonFiniteError naming every tensor of `tensors` that holds NaN or Inf."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{what}: NaN or Inf in {', '.join(bad)}")


def save_model(model: RepeatRNN, path, extra: dict | None = None) -> None:
    """Save weights and hyperparameters (atomically) so load_model needs nothing else; refuses
    non-finite weights."""
    check_finite(model.state_dict(), f"{path}: model weights")
    save_torch({"hyperparameters": model.hyperparameters(), "state_dict": model.state_dict(),
                "extra": extra or {}}, path)


def load_model(path, device: str | torch.device = "cpu", variant: str | None = None,
               size: int | None = None) -> RepeatRNN:
    """Load a model saved by save_model, frozen (eval mode, no gradients); when `variant` or `size`
    is given, a model of another variant or size is an error that names the file."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model = RepeatRNN(**blob["hyperparameters"])  # files from before `cell` existed: a GRU
        model.load_state_dict({k.replace("gru.", "rnn.", 1) if k.startswith("gru.") else k: v
                               for k, v in blob["state_dict"].items()})
    except Exception as err:  # corrupt or foreign file: name it, without PyTorch's unpickling advice
        import pickle
        reason = "not a file saved by onion" if isinstance(err, pickle.UnpicklingError) \
            else f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        raise ValueError(f"{path}: not a readable onion model ({reason}); "
                         "delete it and rerun its train_model job") from err
    if (variant or model.variant, size or model.hidden_size) != (model.variant, model.hidden_size):
        raise ValueError(f"{path}: a {model.variant} N={model.hidden_size} model, "
                         f"not {variant} N={size}")
    check_finite(model.state_dict(), f"{path}: model weights")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
