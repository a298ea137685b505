"""Hand-built repeat models whose right answers are known by construction (known-answer tests).

All three expose the interface of RepeatRNN that interventions and probes use:
`encode(tokens, lengths) -> h [B, N]`, `decode(h, inputs) -> logits [B, T, V]`,
`decoder_inputs(targets)`, `generate(h, steps)`, and `n_symbols`, `hidden_size`, `state_size`,
`variant`.
All decode every sequence perfectly (exact match 1.0).
"""

from __future__ import annotations

import torch
from torch import nn

from onion.data import sos_token
from onion.model import RepeatRNN


def _unit_codes(n_symbols: int, dim: int, seed: int, orthonormal: bool) -> torch.Tensor:
    """[n_symbols, dim] unit vectors; orthonormal ones need dim >= n_symbols."""
    g = torch.Generator().manual_seed(seed)
    if orthonormal:
        if dim < n_symbols:
            raise ValueError(f"orthonormal codes need dim >= n_symbols ({dim} < {n_symbols})")
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        return q[:n_symbols].contiguous()
    codes = torch.randn(n_symbols, dim, generator=g)
    return codes / codes.norm(dim=1, keepdim=True)


class _HandBuilt(nn.Module):
    variant = "autoregressive"
    cell = "hand_built"

    @property
    def state_size(self) -> int:  # the state is h alone
        return self.hidden_size

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        inputs = torch.empty_like(targets)
        inputs[:, 0] = sos_token(self.n_symbols)
        inputs[:, 1:] = targets[:, :-1]
        return inputs

    decode_loss = RepeatRNN.decode_loss  # the teacher-forced loss of decode(), as the GRU's

    @torch.no_grad()
    def generate(self, h: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy autoregressive decoding: h [B, N] -> tokens [B, steps]."""
        inputs = torch.full((h.shape[0], 1), sos_token(self.n_symbols), dtype=torch.long, device=h.device)
        for _ in range(steps):
            nxt = self.decode(h, inputs)[:, -1:].argmax(-1)
            inputs = torch.cat([inputs, nxt], dim=1)
        return inputs[:, 1:]


class SlotModel(_HandBuilt):
    """Position p stored in its own block of `block` coordinates: h = [c(x_0); c(x_1); ...].

    c(x) is a unit code per symbol; output step k reads block k by dot products with the codes.
    Every position lives in its own linear subspace, so linear interventions and probes succeed.
    """

    def __init__(self, n_symbols: int = 30, max_length: int = 9, block: int = 5, seed: int = 0):
        super().__init__()
        self.n_symbols, self.max_length, self.block = n_symbols, max_length, block
        self.hidden_size = max_length * block
        self.register_buffer("codes", _unit_codes(n_symbols, block, seed, orthonormal=False))

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # tokens [B, T] -> h [B, max_length * block]; positions >= L stay 0
        batch, width = tokens.shape
        present = torch.arange(width, device=tokens.device)[None, :] < lengths[:, None]  # [B, T]
        blocks = self.codes[tokens] * present[..., None]  # [B, T, block]
        h = tokens.new_zeros(batch, self.max_length, self.block, dtype=self.codes.dtype)
        h[:, :width] = blocks
        return h.flatten(1)

    def decode(self, h: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        # step k reads block k: logits [B, T, V]; the inputs play no role
        steps = inputs.shape[1]
        blocks = h.view(h.shape[0], self.max_length, self.block)[:, :steps]  # [B, T, block]
        return blocks @ self.codes.T


class OnionModel(_HandBuilt):
    """The hand-built onion model of PAPER.md §7: h_L = Σ_t γ^t e(x_t), t = 0..L-1.

    e is orthonormal, so with γ < 1/2 the first stored token dominates every dot product.
    Decoding peels the layers: output step k reads argmax e·h, then the next input y_k is
    removed with its scale, h ← h − γ^k e(y_k). Tokens share directions across positions and
    differ only in magnitude, so no position has a linear subspace of its own.
    """

    def __init__(self, n_symbols: int = 30, hidden_size: int = 32, gamma: float = 0.4, seed: int = 0):
        super().__init__()
        self.n_symbols, self.hidden_size, self.gamma = n_symbols, hidden_size, gamma
        embedding = torch.zeros(n_symbols + 2, hidden_size)  # SOS and "no input" embed to 0
        embedding[:n_symbols] = _unit_codes(n_symbols, hidden_size, seed, orthonormal=True)
        self.register_buffer("embedding", embedding)

    def scales(self, steps: int, device=None) -> torch.Tensor:
        return self.gamma ** torch.arange(steps, device=device, dtype=self.embedding.dtype)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = tokens.shape[1]
        present = torch.arange(width, device=tokens.device)[None, :] < lengths[:, None]
        weights = self.scales(width, tokens.device)[None, :] * present  # [B, T]
        return (self.embedding[tokens] * weights[..., None]).sum(1)  # [B, N]

    def decode(self, h: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        # before output step k, inputs[1..k] (= y_0..y_{k-1}) have been removed with scales γ^0..γ^{k-1}
        steps = inputs.shape[1]
        removed = self.embedding[inputs[:, 1:]] * self.scales(steps - 1, h.device)[None, :, None]
        removed = torch.cat([torch.zeros_like(h)[:, None], removed.cumsum(1)], dim=1)  # [B, T, N]
        return (h[:, None] - removed) @ self.embedding[:self.n_symbols].T


class BigramModel(_HandBuilt):
    """Bigram t = (x_t, x_{t+1}) stored in block t, t = 0..L-2: h = [c(x_0, x_1); c(x_1, x_2); ...].

    c(a, b) is a unit code drawn independently for each ordered pair of symbols, so a block holds
    its bigram as a whole, not its two tokens side by side. Decoding (L >= 2) reads y_0 as the
    first token of the pair whose code best matches block 0, and y_k, k >= 1, from block k-1 by
    dot products with c(y_{k-1}, ·), the codes of the pairs that start with the decoder input (the
    previous output). A code matches itself with 1 and any other code with less, so decoding is
    perfect; logits are scaled by `scale` so that the frozen decoder's cross-entropy tells an
    intervention how close it is.

    Every bigram has its own linear subspace (its block): a linear bigram intervention that moves
    blocks k-1 and k from a source that holds y's tokens at k-1, k, k+1 rebuilds y's state exactly.
    No position has one: a unigram intervention that splits a pair (t in I, t+1 not, or the
    reverse) leaves block t with codes of other pairs, from which step t+1 cannot read y_{t+1}.
    """

    def __init__(self, n_symbols: int = 30, max_length: int = 9, block: int = 16, scale: float = 10.0,
                 seed: int = 0):
        super().__init__()
        self.n_symbols, self.max_length, self.block, self.scale = n_symbols, max_length, block, scale
        self.hidden_size = (max_length - 1) * block
        codes = _unit_codes(n_symbols * n_symbols, block, seed, orthonormal=False)
        self.register_buffer("codes", codes.view(n_symbols, n_symbols, block))  # c(a, b) = codes[a, b]

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # tokens [B, T] -> h [B, (max_length - 1) * block]; bigrams t >= L - 1 stay 0
        batch, width = tokens.shape
        present = torch.arange(width - 1, device=tokens.device)[None, :] < lengths[:, None] - 1  # [B, T-1]
        blocks = self.codes[tokens[:, :-1], tokens[:, 1:]] * present[..., None]  # [B, T-1, block]
        h = tokens.new_zeros(batch, self.max_length - 1, self.block, dtype=self.codes.dtype)
        h[:, :width - 1] = blocks
        return h.flatten(1)

    def decode(self, h: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        # logits [B, T, V], scaled so that the cross-entropy is informative
        s = self.n_symbols
        blocks = h.view(h.shape[0], self.max_length - 1, self.block)
        first = (blocks[:, 0] @ self.codes.view(s * s, self.block).T).view(-1, s, s).amax(-1)  # [B, V]
        previous = inputs[:, 1:]  # y_0 .. y_{T-2}
        rest = (self.codes[previous] * blocks[:, :previous.shape[1], None]).sum(-1)  # [B, T-1, V]
        return self.scale * torch.cat([first[:, None], rest], dim=1)
