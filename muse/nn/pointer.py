"""A learned copy path: the neural cache / pointer-sentinel mixture over the model's own window.

    p(w | t) = (1 - g_t) p_vocab(w | t) + g_t Σ_{j < t, x_{j+1} = w} a_tj

``p_vocab`` is the LM head's softmax; ``a_t`` the softmax over the window's earlier positions
j < t of θ cos(q_t, k_j) with q = W_q h, k = W_k h (h the head's input, (B, S, d)); the gate
g_t = sigmoid(w_g · h_t + b_g), 0 at t = 0 where no earlier position exists. Position j offers
the token after it, x_{j+1}, which the model has read by t > j: causal by construction, and the
distribution sums to 1. This is Grave et al. (2017)'s continuous cache with its θ, λ learned and
λ made a function of h_t as in Merity et al. (2017)'s pointer sentinel. W_q and W_k start equal,
so the initial scores are the training-free cache's cos(h_t, h_j) seen through one random
projection. Parameters and arithmetic are fp32 whatever the model's storage dtype (d_key·2d + d + 2
values); the scores are the cost: O(S²) work per window, computed in blocks of query rows that
backward recomputes, so no (B, S, S) tensor is kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from muse._checks import check_choice, check_float, check_int

MODES = ("cache", "sentinel")
_MASKED = -30000.0  # a finite "minus infinity" for the scores: an empty row stays NaN-free


def log_mean_exp_cos(theta: float, d: int) -> float:
    """log E[exp(θ c)], c the cosine of two independent uniform directions in d dimensions (density
    ∝ (1 - c²)^((d-3)/2)): log(Γ(d/2) (2/θ)^(d/2-1) I_(d/2-1)(θ)); cosh θ at d = 1. Where the scaled Bessel
    function underflows (large d), :func:`_log_mean_exp_cos_quadrature`."""
    from scipy.special import gammaln, ive

    nu = d / 2 - 1
    value = float(ive(nu, theta))
    if not 0 < value < math.inf:
        return _log_mean_exp_cos_quadrature(theta, d)
    return float(gammaln(d / 2) + nu * math.log(2 / theta) + math.log(value) + theta)


def _log_mean_exp_cos_quadrature(theta: float, d: int, points: int = 20001) -> float:
    """The same for d >= 2 in log space: c = cos φ, φ on [0, π] with weight sin^(d-2) φ (trapezoid rule)."""
    import numpy as np
    from scipy.special import logsumexp

    phi = np.linspace(0.0, math.pi, points)
    with np.errstate(divide="ignore"):  # sin φ = 0 at the ends: weight 0 for d > 2
        log_w = np.zeros(points) if d == 2 else (d - 2) * np.log(np.sin(phi))
    log_w[[0, -1]] += math.log(0.5)  # the trapezoid rule's end weights
    return float(logsumexp(log_w + theta * np.cos(phi)) - logsumexp(log_w))


class PointerMixture(nn.Module):
    """The copy path of a language model (module docstring); ``d_key`` the width of q and k, ``theta`` the
    initial θ and ``gate`` the initial g (the training-free cache's best values at tiny size: 20, 0.1)."""

    def __init__(self, d_model: int, d_key: int = 64, *, theta: float = 20.0, gate: float = 0.1,
                 mode: str = "cache", device=None):
        super().__init__()
        check_choice("mode", mode, MODES)
        self.mode = mode
        check_int("d_model", d_model, min_value=1)
        check_int("d_key", d_key, min_value=1)
        check_float("theta", theta, min_value=0.0, min_inclusive=False)
        check_float("gate", gate, min_value=0.0, min_inclusive=False)
        if gate >= 1:
            raise ValueError(f"gate must be < 1 (the initial copy weight), got {gate}")
        self.query = nn.Linear(d_model, d_key, bias=False, device=device, dtype=torch.float32)
        self.key = nn.Linear(d_model, d_key, bias=False, device=device, dtype=torch.float32)
        self.log_theta = nn.Parameter(torch.full((), math.log(theta), device=device))
        self.gate = nn.Linear(d_model, 1, device=device, dtype=torch.float32)
        self._theta0, self._gate0 = theta, gate
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W_q = W_k ~ N(0, 1/d), θ at its initial value, the gate's weight 0 and bias logit(gate); "sentinel":
        the bias that gives the head 1 - gate of the mass over a window of random unit keys (so the scores start
        with a gradient the size of the cache's, not e^-θ times smaller)."""
        if self.query.weight.is_meta:
            return
        self.query.weight.normal_(0.0, self.query.in_features ** -0.5)
        self.key.weight.copy_(self.query.weight)
        self.log_theta.fill_(math.log(self._theta0))
        self.gate.weight.zero_()
        bias = math.log((1 - self._gate0) / self._gate0)
        if self.mode == "sentinel":  # the head's share 1 - g on average over random unit keys
            bias += log_mean_exp_cos(self._theta0, self.query.out_features)
        self.gate.bias.fill_(bias if self.mode == "sentinel" else -bias)

    @staticmethod
    def parameter_count(d_model: int, d_key: int) -> int:
        return 2 * d_model * d_key + 1 + d_model + 1

    def project(self, h: torch.Tensor):
        """h (B, R, d) -> unit queries and keys (B, R, d_key), θ and the gate's logit (B, R); fp32 (fp64
        for fp64 h)."""
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        h = h.to(acc)
        q = nn.functional.normalize(nn.functional.linear(h, self.query.weight.to(acc)), dim=-1)
        k = nn.functional.normalize(nn.functional.linear(h, self.key.weight.to(acc)), dim=-1)
        gate = nn.functional.linear(h, self.gate.weight.to(acc), self.gate.bias.to(acc))[..., 0]
        return q, k, self.log_theta.to(acc).exp(), gate

    def _weights(self, q: torch.Tensor, k: torch.Tensor, theta: torch.Tensor, gate: torch.Tensor,
                 t0: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the query rows at positions t0 .. (q (B, R, d_key), gate (B, R)) over the keys k (B, L, d_key)
        of positions 0 .. L - 1: log of the head's weight (B, R) and of each earlier position's copy
        weight (B, R, L), ``_MASKED``-ish (exactly 0 once exponentiated) at j >= t.  ``t0``: an int, or a
        (1,) int64 tensor (static decoding: no host sync).

        "cache": 1 - g and g·softmax_j(s), g = sigmoid(gate), 0 at position 0.  "sentinel": one softmax
        over [gate + log t, s_j for j < t] (the sentinel's share is the head's weight)."""
        s = torch.matmul(q, k.transpose(-1, -2)) * theta
        rows = torch.arange(q.shape[1], device=q.device) + t0
        earlier = torch.arange(k.shape[1], device=q.device)[None, :] < rows[:, None]
        s = torch.where(earlier, s, _MASKED)
        lse = torch.logsumexp(s, dim=-1)
        if self.mode == "sentinel":
            sentinel = gate + rows.clamp_min(1).to(gate.dtype).log()
            z = torch.logaddexp(sentinel, lse)
            return sentinel - z, s - z[..., None]
        first = rows == 0  # no earlier position: g = 0
        log_g = torch.where(first, -math.inf, nn.functional.logsigmoid(gate))
        log_1mg = torch.where(first, 0.0, nn.functional.logsigmoid(-gate))
        return log_1mg, log_g[..., None] + s - lse[..., None]

    @staticmethod
    def _offers(ids: torch.Tensor) -> torch.Tensor:
        """The token each position j offers, x_{j+1} (B, L); the last column (no successor yet) is
        never an earlier position of any query, so its value is unused."""
        return torch.cat([ids[:, 1:], ids[:, -1:]], dim=1)

    def _nll_rows(self, q, k, theta, gate, nxt, targets, vocab_nll, t0: int) -> torch.Tensor:
        """-log p(target) for the query rows t0.. (every argument but k and nxt cut to those rows)."""
        t1 = t0 + q.shape[1]
        log_vocab, log_copy = self._weights(q, k[:, :t1], theta, gate, t0)
        match = nxt[:, None, :t1] == targets[:, :, None]  # (B, R, j): j offers the target
        copy = torch.where(match, log_copy, -math.inf)
        terms = torch.cat([(log_vocab - vocab_nll.to(log_vocab.dtype))[..., None], copy], dim=-1)
        return -torch.logsumexp(terms, dim=-1)

    def nll(self, h: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor, vocab_nll: torch.Tensor,
            ignore_index: int = -100, block: int = 256) -> torch.Tensor:
        """-log p(target) per token (B, S) fp32 (fp64 for fp64 ``h``), 0 where ``targets`` is
        ``ignore_index``, from the head input ``h`` (B, S, d), the window's ``input_ids`` (B, S), and the
        head's own -log p_vocab(target).

        Query rows go in blocks of ``block``, each recomputed in backward (activation checkpointing):
        the (B, block, S) scores are the largest tensor alive, and none is kept for backward."""
        q, k, theta, gate = self.project(h)
        nxt = self._offers(input_ids)
        rows = []
        for t0 in range(0, h.shape[1], block):
            cut = slice(t0, t0 + block)
            args = (q[:, cut], k, theta, gate[:, cut], nxt, targets[:, cut], vocab_nll[:, cut], t0)
            if torch.is_grad_enabled():
                rows.append(checkpoint(self._nll_rows, *args, use_reentrant=False))
            else:
                rows.append(self._nll_rows(*args))
        nll = torch.cat(rows, dim=1)
        return torch.where(targets == ignore_index, 0.0, nll)

    def mix(self, q, keys, theta, gate, ids: torch.Tensor, logits: torch.Tensor,
            t0: int | torch.Tensor = 0) -> torch.Tensor:
        """The mixture's log-probabilities (B, R, V) for the positions t0 .. t0 + R - 1, from their
        :meth:`project` terms (q, gate), the keys (B, L, d_key) and ids (B, L) of the window from position 0
        (L >= t0 + R; later entries are masked, so static buffers work), and the head's ``logits``
        (B, R, V)."""
        log_vocab, log_copy = self._weights(q, keys, theta, gate, t0)  # (B, R), (B, R, L)
        nxt = self._offers(ids)  # (B, L)
        out = torch.log_softmax(logits.to(q.dtype), dim=-1) + log_vocab[..., None]
        # the copy mass of each offered token, added at that token only (not over the whole vocabulary):
        # position j's column carries the mass of every position offering the same token, and only the first
        # of them writes it (a later duplicate adds 0), so each token is counted once
        same = nxt[:, :, None] == nxt[:, None, :]  # (B, L, L)
        mass = torch.matmul(log_copy.exp(), same.to(q.dtype))  # (B, R, L)
        first = ~same.tril(-1).any(-1)  # (B, L): no earlier position offers j's token
        index = nxt[:, None, :].expand(-1, q.shape[1], -1)
        old = out.gather(-1, index)
        log_mass = torch.where(mass > 0, mass.clamp_min(torch.finfo(mass.dtype).tiny).log(), -math.inf)
        delta = torch.where(first[:, None, :], torch.logaddexp(old, log_mass) - old, 0.0)
        return out.scatter_add(-1, index, delta)

    def log_probs(self, h: torch.Tensor, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The mixture's log-probabilities (B, S, V) fp32 (fp64 for fp64 ``h``) from the head input
        ``h`` (B, S, d), the window's ``input_ids`` and the head's ``logits`` (B, S, V)."""
        q, k, theta, gate = self.project(h)
        return self.mix(q, k, theta, gate, input_ids, logits)
