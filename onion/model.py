"""The repeat-task GRU: one torch.nn.GRU shared by encoder and decoder (PAPER.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from onion.data import no_input_token, sos_token

VARIANTS = ("autoregressive", "no_input")


class RepeatGRU(nn.Module):
    """Embedding -> GRU(N, N) -> Linear(N, n_symbols); the same GRU encodes and decodes.

    Token ids: 0..n_symbols-1 symbols, n_symbols = SOS, n_symbols + 1 = "no input".
    """

    def __init__(self, n_symbols: int, hidden_size: int, variant: str = "autoregressive"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        self.n_symbols, self.hidden_size, self.variant = n_symbols, hidden_size, variant
        self.embedding = nn.Embedding(n_symbols + 2, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, n_symbols)

    def hyperparameters(self) -> dict:
        return {"n_symbols": self.n_symbols, "hidden_size": self.hidden_size, "variant": self.variant}

    def encode_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden state after every input token: [B, T] -> [B, T, N], h_0 = 0."""
        states, _ = self.gru(self.embedding(tokens))
        return states

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final state h_L of each sequence: tokens [B, T] (padded after L), lengths [B] -> [B, N].

        Padding sits after the last real token, so states up to L are exactly those of the
        sequence alone; we run the padded batch and pick step L - 1 of each row.
        """
        states = self.encode_all(tokens)
        return states[torch.arange(len(lengths), device=tokens.device), lengths - 1]

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs: [B, T] targets -> [B, T] inputs starting with SOS."""
        inputs = torch.full_like(targets, no_input_token(self.n_symbols))
        inputs[:, 0] = sos_token(self.n_symbols)
        if self.variant == "autoregressive":
            inputs[:, 1:] = targets[:, :-1]
        return inputs

    def decode(self, h: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of each output step: h [B, N], inputs [B, T] -> [B, T, n_symbols]."""
        states, _ = self.gru(self.embedding(inputs), h.unsqueeze(0).contiguous())
        return self.readout(states)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced output logits [B, T, n_symbols] for inputs tokens [B, T]."""
        return self.decode(self.encode(tokens, lengths), self.decoder_inputs(tokens))

    @torch.no_grad()
    def generate(self, h: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy decoding from final states h [B, N] -> tokens [B, steps]."""
        batch = h.shape[0]
        if self.variant == "no_input":  # inputs do not depend on outputs: one call
            inputs = self.decoder_inputs(torch.zeros(batch, steps, dtype=torch.long, device=h.device))
            return self.decode(h, inputs).argmax(-1)
        state = h.unsqueeze(0).contiguous()
        token = torch.full((batch, 1), sos_token(self.n_symbols), dtype=torch.long, device=h.device)
        outputs = []
        for _ in range(steps):
            out, state = self.gru(self.embedding(token), state)
            token = self.readout(out).argmax(-1)  # [B, 1]
            outputs.append(token)
        return torch.cat(outputs, dim=1)


def check_finite(tensors: dict, what: str) -> None:
    """Raise NonFiniteError naming every tensor of `tensors` that holds NaN or Inf."""
    from onion.runtime import NonFiniteError
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{what}: NaN or Inf in {', '.join(bad)}")


def save_model(model: RepeatGRU, path, extra: dict | None = None) -> None:
    """Save weights and hyperparameters (atomically) so load_model needs nothing else; refuses
    non-finite weights."""
    check_finite(model.state_dict(), f"{path}: model weights")
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"hyperparameters": model.hyperparameters(), "state_dict": model.state_dict(),
                "extra": extra or {}}, tmp)
    tmp.replace(path)


def load_model(path, device: str | torch.device = "cpu") -> RepeatGRU:
    """Load a model saved by save_model, frozen (eval mode, no gradients)."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model = RepeatGRU(**blob["hyperparameters"])
        model.load_state_dict(blob["state_dict"])
    except Exception as err:  # corrupt or foreign file: name it, without PyTorch's unpickling advice
        import pickle
        reason = "not a file saved by onion" if isinstance(err, pickle.UnpicklingError) \
            else f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        raise ValueError(f"{path}: not a readable onion model ({reason}); "
                         "delete it and rerun its train_model job") from err
    check_finite(model.state_dict(), f"{path}: model weights")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
