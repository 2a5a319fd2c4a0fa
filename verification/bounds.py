"""The error bounds of docs/numerics.md as code (derivations live there; nothing here is fitted).

Notation: u = 2**-24 (fp32 unit roundoff), gamma_n = n u / (1 - n u).  ``y`` is the
fp32 value an op computes before its final rounding, ``x`` the exact result.

Lemma (one final rounding): fl16(y) is the fp16 number nearest to y, so
|fl16(y) - y| <= |fl16(x) - y|, and

    |fl16(y) - x| <= |fl16(x) - x| + 2 |y - x| <= 0.5 ulp(x) + 2 |y - x|.

Since |x| / ulp(x) < 2**11, a relative fp32 error |y - x| <= r |x| costs at most
2 r 2**11 ULP on top of the 0.5: ``one_rounding(r)``.  Where no relative bound
exists (cancellation in a sum), the mixed form |y - x| <= E gives

    |fl16(y) - x| <= 0.5 ulp(|x| + E) + E     (``mixed``)

because |fl16(y) - y| <= 0.5 ulp(y) and |y| <= |x| + E.

Device dependence enters only through the fp32 elementary functions (documented
maximum errors, in ulps of fp32, taken against the exact value: CUDA's table is
stated against the correctly rounded result, so 0.5 is added) and through the GEMM
accumulation model.
"""

from __future__ import annotations

import math

import numpy as np

from verification.ulp import F16, ulp

U = 2.0**-24  # fp32 unit roundoff
RATIO = 2.0**11  # sup |x| / ulp16(x)


def gamma(n: float, u: float = U) -> float:
    """gamma_n = n u / (1 - n u) (Higham), for n u < 1."""
    if n * u >= 1:
        raise ValueError(f"gamma_{n} is undefined for u = {u}")
    return n * u / (1 - n * u)


def one_rounding(rel: float) -> float:
    """Bound in ULPs for fl16(y) when |y - x| <= rel |x|: 0.5 + 2 rel 2**11."""
    return 0.5 + 2.0 * rel * RATIO


def mixed(x_abs: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Absolute bound 0.5 ulp16(|x| + E) + E for fl16(y) when |y - x| <= E."""
    x_abs = np.abs(np.asarray(x_abs, dtype=np.float64))
    err = np.asarray(err, dtype=np.float64)
    return 0.5 * ulp(x_abs + err, F16) + err


def in_ulps(abs_bound: np.ndarray, exact_hi: np.ndarray) -> np.ndarray:
    """An absolute bound expressed in ULPs of the exact value."""
    return np.asarray(abs_bound) / ulp(np.abs(exact_hi), F16)


# Documented fp32 elementary-function errors, in fp32 ulps of the exact result.
#   cpu: SLEEF u10 kernels (sin, cos, exp, atan2: 1.0 ulp; torch's AVX2/AVX512 path) and
#        glibc for the scalar tail elements (x86_64 libm-test-ulps: sinf, cosf, expf 1;
#        atan2f 2); sqrt and division are IEEE (correctly rounded).
#   cuda: CUDA C++ Programming Guide, "Mathematical Functions", maximum ulp error vs the
#        correctly rounded result: expf 2, sinf 2, cosf 2, atan2f 3, rsqrtf 2; sqrtf and
#        x/y 0 (PyTorch builds without -use_fast_math); +0.5 to compare with the exact value.
#   log (linear cross-entropy): SLEEF u10 / glibc logf 1 ulp on cpu; CUDA logf 1 ulp (+0.5).
LIBM_ULPS = {
    "cpu": {"exp": 1.0, "sin": 1.0, "cos": 1.0, "atan2": 2.0, "log": 1.0},
    "cuda": {"exp": 2.5, "sin": 2.5, "cos": 2.5, "atan2": 3.5, "log": 1.5},
}
# Relative error of rsqrt: cpu computes 1 / sqrt(v) (two IEEE roundings); cuda rsqrtf 2.5 ulp.
RSQRT_REL = {"cpu": 2 * U / (1 - U), "cuda": 2.5 * 2 * U}
# CUDA tensor-core GEMM model: blocks of NB exact products added to the fp32 accumulator
# with alignment to the largest addend and truncation (Fasi et al. 2021; Khattak & Mikaitis
# 2025 for H100), partial sums combined by IEEE fp32 additions.
CUDA_GEMM_BLOCK = 16
#: the widest row tile of the log-sum-exp kernel (muse.kernels._triton._ce_tile), which rescales its running sum
#: once per tile of a wider chunk
LSE_TILE = 4096


def device_kind(device) -> str:
    """'cpu' or 'cuda' from a device string/torch.device; ValueError otherwise."""
    kind = str(device).split(":")[0]
    if kind not in LIBM_ULPS:
        raise ValueError(f"no error model for device {device!r}; expected cpu or cuda")
    return kind


def libm_rel(fn: str, device) -> float:
    """Relative error of an fp32 libm result: k ulp32 <= 2 k u |f|."""
    return 2.0 * LIBM_ULPS[device_kind(device)][fn] * U


# ------------------------------------------------------------ constant bounds
def abs_rel() -> float:
    """sqrt(fl(re^2 + im^2)) with exact squares, one add, one sqrt: sqrt(1+u)(1+u) - 1."""
    return math.sqrt(1 + U) * (1 + U) - 1


def _div_rel() -> float:
    """(fl(num) / fl(den)) rounded, exact 2**k scaling: (1+u)^2/(1-u) - 1."""
    return (1 + U) ** 2 / (1 - U) - 1


def ulp_bound(op: str, device="cpu") -> float:
    """Bound in ULPs of the exact result for the elementwise ops (see docs/numerics.md)."""
    kind = device_kind(device)
    if op in ("add", "sub", "mul_real"):
        return 0.5  # correctly rounded: exact or innocuous double rounding (p32 = 24 >= 2*11 + 2)
    if op in ("mul", "abs2"):
        return one_rounding(U)  # exact products, one fp32 addition
    if op == "abs":
        return one_rounding(abs_rel())
    if op == "div":
        return one_rounding(_div_rel())
    if op == "angle":
        return 0.5 + 2.0 * LIBM_ULPS[kind]["atan2"] * 2.0**-13  # k ulp32(x) = k 2**-13 ulp16(x)
    if op == "exp":
        rel = (1 + libm_rel("exp", kind)) * (1 + libm_rel("cos", kind)) * (1 + U) - 1
        rel = max(rel, (1 + libm_rel("exp", kind)) * (1 + libm_rel("sin", kind)) * (1 + U) - 1)
        return one_rounding(rel)
    if op == "polar":
        rel = max(libm_rel("cos", kind), libm_rel("sin", kind))
        return one_rounding((1 + rel) * (1 + U) - 1)
    if op == "dropout":
        return one_rounding((1 + U) ** 3 * (1 + 2.0**-53) - 1)  # 1/(1-p) in fp64 -> fp32, /, *
    raise ValueError(f"no constant ULP bound for {op!r}")


# --------------------------------------------------------------- mixed bounds
def gemm_terms(n_terms: int, device="cpu") -> float:
    """m such that the fp32 dot product of n exact products has error <= gamma_m sum |p_i|.

    cpu (IEEE fp32, any summation order, FMA or not): m = n (n - 1 additions, plus one
    for a separate rounding of the block sum or the beta * C epilogue).
    cuda: each of ceil(n / NB) tensor-core steps errs by < 2 (NB + 1) u sum|addends|
    (alignment truncation of NB addends and a truncating normalisation), plus
    ceil(log2 n) + 1 IEEE roundings for split-K partial sums and the epilogue.
    """
    kind = device_kind(device)
    if kind == "cpu":
        return float(n_terms)
    nb = CUDA_GEMM_BLOCK
    return float(2 * (nb + 1) * math.ceil(n_terms / nb) + math.ceil(math.log2(max(n_terms, 2))) + 1)


def gemm_abs(abs_sums: np.ndarray, n_terms: int, device="cpu") -> np.ndarray:
    """E = gamma_m sum |p_i| for a dot product of ``n_terms`` exact products (see gemm_terms)."""
    return gamma(gemm_terms(n_terms, device)) * np.asarray(abs_sums)


def sum_abs(abs_sums: np.ndarray, n: int, mean: bool = False) -> np.ndarray:
    """fp32 sum of n exact terms: gamma_(n-1) sum|z|; a mean adds <= 2 roundings (/n or *(1/n))."""
    m = max(n - 1, 0) + (2 if mean else 0)
    return gamma(m) * np.asarray(abs_sums) if m else np.zeros_like(np.asarray(abs_sums))


def modrelu_abs(z_comp: np.ndarray, r: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """|y - x| for one output component of modReLU, y = fl(z fl(fl(r^ + b) / r^)).

    r^ = r (1 + t) with |t| <= t_max = sqrt(1+u)(1+u) - 1, then three roundings:
    E = (|z_c| / r) [ |r + b| ((1+u)^3 / (1 - t_max) - 1) + r t_max (1+u)^3 / (1 - t_max) ].
    Near |z| = -b the second term dominates: the error is ~1.5 u |b|, not relative to x.
    """
    t = abs_rel()
    g = (1 + U) ** 3 / (1 - t)
    r = np.asarray(r, dtype=np.float64)
    safe = np.where(r > 0, r, 1.0)
    e = (np.abs(z_comp) / safe) * (np.abs(shifted) * (g - 1) + safe * t * g)
    return np.where(r > 0, e, 0.0)


def embedding_abs(stats: dict, x_re: np.ndarray, x_im: np.ndarray, with_position: bool,
                  with_phase: bool) -> tuple[np.ndarray, np.ndarray]:
    """|y - x| per component of (W[ids] + P) e^{i phase} computed in fp32.

    t^ = fl(Wr + P) (one rounding if P is given); cos/sin come from Python's float64 libm
    (<= 1 ulp64) and are rounded to fp32: rel_c = (1 + 2**-52)(1 + u) - 1.  Then
    re = fl(fl(t^ c^) - fl(Wi s^)) and im = fl(fl(t^ s^) + fl(Wi c^)):
    E_re = |t c| a + |Wi s| b + u (|x_re| + |t c| a + |Wi s| b), with
    a = (1+u)^(1+[P])(1+rel_c) - 1 and b = (1+u)(1+rel_c) - 1 (likewise for im).
    Without a phase, re = fl(t^): E_re = u |t| [P given], 0 otherwise; im is exact.
    """
    u = U
    t, wi = stats["t"], stats["wi"]
    if not with_phase:
        e_re = u * t if with_position else np.zeros_like(t)
        return e_re, np.zeros_like(t)
    rel_c = (1 + 2.0**-52) * (1 + u) - 1
    a = (1 + u) ** (2 if with_position else 1) * (1 + rel_c) - 1
    b = (1 + u) * (1 + rel_c) - 1
    c, s = abs(stats["cos"]), abs(stats["sin"])
    p_re = t * c * a + wi * s * b
    p_im = t * s * a + wi * c * b
    return p_re + u * (np.abs(x_re) + p_re), p_im + u * (np.abs(x_im) + p_im)


def _layer_norm_parts(stats: dict[str, np.ndarray], eps: float, device="cpu"):
    """(dl_re, dl_im, rho_r): the bounds |c^ - c| per plane and |r^/r - 1| of the fp32 LayerNorm statistics
    (docs/numerics.md, "LayerNorm").

    e_mu = gamma_(d+1) sum|z|/d (mean per plane), Delta_k = e_mu + u (|c_k| + e_mu) for
    c^ = fl(z - mu^); Xi = sum_k 2|c_k||D_k| + |D_k|^2 bounds sum |c^|^2 - sum |c|^2;
    V^ = (v^ + eps32)(1 + d) gives rho_V, and V^ >= eps (1 - u)^2 always; rsqrt adds tau, so
    |r^/r - 1| <= rho_r.
    """
    u = U
    d = stats["c_re"].shape[-1]
    c_re, c_im = stats["c_re"], stats["c_im"]
    v = stats["var"]
    e_mu_re = gamma(d + 1) * stats["s1_re"] / d
    e_mu_im = gamma(d + 1) * stats["s1_im"] / d
    dl_re = e_mu_re + u * (np.abs(c_re) + e_mu_re)
    dl_im = e_mu_im + u * (np.abs(c_im) + e_mu_im)
    c_abs = np.hypot(c_re, c_im)
    d_abs = np.hypot(dl_re, dl_im)
    xi = np.sum(2 * c_abs * d_abs + d_abs**2, axis=-1, keepdims=True)
    g = gamma(d + 3)
    big_v = v + eps
    a = g * (v + xi / d) + xi / d
    rho_v = (a * (1 + u) + u * eps * (1 + u) + u * big_v) / big_v
    # V^ lies in [V_lo, V (1 + rho_V)]; v^ >= 0 gives the floor V^ >= eps (1 - u)^2 even when the
    # mean's error makes rho_V >= 1 (a row of equal values with a tiny eps).
    v_lo = np.maximum(big_v * (1 - rho_v), eps * (1 - u) ** 2)
    tau = RSQRT_REL[device_kind(device)]
    rho_r = np.maximum((1 + tau) * np.sqrt(big_v / v_lo) - 1, 1 - (1 - tau) / np.sqrt(1 + rho_v))
    return dl_re, dl_im, rho_r


def layer_norm_rstd_rel(stats: dict[str, np.ndarray], eps: float, device="cpu") -> np.ndarray:
    """|r^/r - 1| per row for the fp32 LayerNorm's r^ = 1/sqrt(v^ + eps) (docs/numerics.md, "LayerNorm")."""
    return _layer_norm_parts(stats, eps, device)[2]


def layer_norm_abs(stats: dict[str, np.ndarray], x_re: np.ndarray, x_im: np.ndarray,
                   weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                   device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """|y - x| per component for the fp32 LayerNorm (docs/numerics.md, "LayerNorm"): the statistics'
    bounds (``_layer_norm_parts``), then n = c^ r^ (1 rounding), times w (1), plus b on the real part (1).
    """
    u = U
    d = stats["c_re"].shape[-1]
    dl_re, dl_im, rho_r = _layer_norm_parts(stats, eps, device)
    r = 1 / np.sqrt(stats["var"] + eps)
    w = np.ones(d) if weight is None else np.abs(np.asarray(weight, dtype=np.float64))
    m = 1 if weight is None else 2
    grow = (1 + rho_r) * (1 + u) ** m
    e_re = w * r * (dl_re * grow + np.abs(stats["c_re"]) * (grow - 1))
    e_im = w * r * (dl_im * grow + np.abs(stats["c_im"]) * (grow - 1))
    if bias is not None:
        e_re = e_re + u * (np.abs(x_re) + e_re)
    return e_re, e_im


HEBB_CHUNK = 16  # muse.kernels' Hebbian chunk (BT)
ETA_NORMAL32 = 2.0**-126  # float32's smallest normal: the absolute error of one operation below it (flush or not)


def hebbian_eps(s: int, dk: int, dv: int, chunk: int | None, log_decay: np.ndarray) -> tuple[float, float, float, int]:
    """(eps_y, eps_g, eps_l, N): the Hebbian scan's rounding counts (docs/numerics.md, "Phase 2's scans under the Triton
    kernels") for y and W_S, for dq, dk, dv, dW_0, and for d log_decay, with the chunk length BT and the chunk count N
    the larger of the kernel's (16) and the PyTorch form's (``chunk``; None: one chunk), so one bound covers both.
    Lambda, the largest Σ|log_decay| over one chunk, carries the decays' exponent errors."""
    used = max(s, 1) if chunk is None else chunk
    bt = max(HEBB_CHUNK, used)
    n = max(1, math.ceil(s / min(HEBB_CHUNK, used)))
    pad = (-s) % bt
    ld = np.pad(np.abs(np.asarray(log_decay, dtype=np.float64)), [(0, 0)] * (np.ndim(log_decay) - 1) + [(0, pad)])
    lam = float(ld.reshape(*ld.shape[:-1], -1, bt).sum(-1).max()) if ld.size else 0.0
    dexp = (n + 1) * 2 * gamma(bt) * lam
    eps_y = gamma(2 * dk + bt + n * (bt + 5) + 6) + dexp
    eps_g = gamma(2 * max(dk, dv) + bt + 2 * n * (bt + 5) + 10) + dexp
    return eps_y, eps_g, eps_g + gamma(dk + s + 2), n


ETA32 = 2.0**-149  # fp32's smallest subnormal: the absolute error of a result that underflows


def linear_cross_entropy_abs(h: np.ndarray, w: np.ndarray, b: np.ndarray | None, targets: np.ndarray,
                             scored: np.ndarray, x: np.ndarray, p: np.ndarray, loss_tok: np.ndarray,
                             storage, scale: float, gemm16: bool, vocab_chunk: int,
                             device="cpu", token_chunk: int | None = None,
                             label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """|computed - exact| bounds for linear_cross_entropy's loss and its three gradients.

    ``storage``: np.float16, np.float32 or the string "bfloat16" (numpy has no bf16; its inputs come as
    bf16-representable values). ``gemm16``: the backward GEMMs run in the 16-bit storage dtype (CUDA), so
    the dlogits are rounded to it first. Inputs are the (exactly representable) h (n, d), w (V, d), b (V,) in float64, the
    targets and scored mask (n,), and the exact logits x, softmax p and per-token losses.
    ``scale`` is what multiplies the sum-gradients (grad_out, divided by the scored count
    for a mean). Steps (docs/numerics.md, "Linear cross-entropy"):

    1. logits: GEMM error gamma_m A (A = sum|h w| + |b|), then one rounding to the storage
       dtype: E = u_s (|x| + gamma_m A) + gamma_m A + eta_s; e_t = max_v E_tv.
    2. lse in fp32 from max-shifted exps, online over K = ceil(V / vocab_chunk) chunks (times
       ceil(vocab_chunk / LSE_TILE): the log-sum-exp kernel's tiles of a wider chunk): the
       shift errs by <= u R (R = logit range), exp by lambda, each of <= K - 1 later rescales
       of a term by (1 + lambda) e^(u R) (1 + u), the sum by gamma_(V-1), log by
       lambda_log |log S| with log S <= log V:
       c_t = -log(1 - psi) + lambda_log (log V + psi) + u (|lse| + 2 e_t), psi from the above.
    3. per token |l^ - l| <= 2 e_t + c_t + u (|l| + 2 e_t + c_t); the fp32 sum of n terms adds
       gamma_(n-1) sum(|l| + err).
    4. softmax in backward from recomputed logits (within e_t of x too) and the saved lse:
       p^ = fl(exp(fl(z' - lse^))), so |p^ - p| <= rho_t p with
       rho_t = e^(2 e_t + c_t + u (R + log V + c_t)) (1 + lambda)(1 + u) - 1; the dlogit
       g = p - onehot adds u |g| (and u_s |g| + eta_s when the GEMMs run in the 16-bit storage dtype).
    5. each gradient is a dot product of dlogits with h or w, accumulated in fp32: d(hidden)
       over V terms in ceil(V / vocab_chunk) fp32 GEMMs summed in fp32, d(weight) one GEMM over
       n terms, d(bias) one more column of that GEMM (hidden with a column of ones); then
       scaled (one rounding) and rounded to the storage dtype (u_s |y| + eta_s).
       Below fp32's normal range a result's error is absolute, not relative: ETA32 = 2^-149 (the
       subnormal spacing) on each probability (exp underflows for z' - lse < -103), on the
       gradient GEMMs (n + V terms at most) and on the scaling.
       ``token_chunk`` (the chunked-tokens path, whose ``vocab_chunk`` is V): d(weight) and
       d(bias) are K_t = ceil(n / token_chunk) GEMMs (or fp32 column sums) of token_chunk terms
       added in fp32, so their sums use gamma(m(token_chunk) + K_t) instead.
    6. label smoothing eps (``loss_tok`` then the smoothed per-token loss lse - (1 - eps) x_t - eps mean_v x_v):
       the target term is scaled by fp32(1 - eps) (rounded: u), the fp32 row sum of the computed logits errs
       by sum_v E_tv + gamma_V sum_v (|x_v| + E_tv) and is scaled by fp32(eps / V) (2 roundings), two more
       subtractions round once each; the dlogit g = p - eps/V - (1 - eps) onehot takes the two rounded
       constants (u each) and two roundings (2 u (|g| + p + rho p + eps/V)).
    """
    u = U
    # the storage's unit roundoff and half its subnormal spacing; fp32 storage: the logits are not re-rounded
    u_s, eta_s = {np.float16: (2.0**-11, 2.0**-25), "bfloat16": (2.0**-8, 2.0**-134)}.get(storage, (0.0, 0.0))
    n, d = h.shape
    v = w.shape[0]
    ah, aw = np.abs(h), np.abs(w)
    bias_abs = np.zeros(v) if b is None else np.abs(b)
    a = ah @ aw.T + bias_abs  # (n, V)
    g_m = gamma(gemm_terms(d + 1, device))
    e_x = u_s * (np.abs(x) + g_m * a) + g_m * a + eta_s  # (n, V)
    e_t = e_x.max(axis=1)  # (n,)
    lam, lam_log = libm_rel("exp", device), libm_rel("log", device)
    big_r = x.max(axis=1) - x.min(axis=1) + 2 * e_t
    phi = (1 + lam) * np.exp(u * big_r) - 1
    n_vchunks = math.ceil(v / vocab_chunk)
    # online lse: <= K - 1 rescales a term, K the pieces summed apart (the Triton kernel rescales per tile too)
    pieces = n_vchunks * math.ceil(vocab_chunk / LSE_TILE)
    rescale = ((1 + lam) * np.exp(u * big_r) * (1 + u)) ** (pieces - 1)
    psi = (1 + phi) * rescale * (1 + gamma(max(v - 1, 1))) - 1
    on, uniform = 1.0 - label_smoothing, label_smoothing / v
    x_t = x[np.arange(n), np.where(scored, targets, 0)]
    lse = loss_tok + on * x_t + uniform * x.sum(axis=1)
    c_t = -np.log1p(-psi) + lam_log * (math.log(v) + psi) + u * (np.abs(lse) + 2 * e_t)
    if label_smoothing:
        e_target = on * e_t + gamma(2) * on * (np.abs(x_t) + e_t)
        row = np.abs(x).sum(axis=1) + e_x.sum(axis=1)
        e_mean = uniform * (e_x.sum(axis=1) + gamma(v) * row) + gamma(2) * uniform * (row + gamma(v) * row)
        e_tok = e_t + c_t + e_target + e_mean
        e_tok = e_tok + u * (np.abs(lse) + np.abs(on * x_t) + e_tok) + u * (np.abs(loss_tok) + e_tok)
    else:
        e_tok = 2 * e_t + c_t
    e_tok = e_tok + u * (np.abs(loss_tok) + e_tok)
    e_tok, l_abs = np.where(scored, e_tok, 0.0), np.where(scored, np.abs(loss_tok), 0.0)
    e_loss = e_tok.sum() + gamma(max(n - 1, 1)) * (l_abs + e_tok).sum()

    rho = np.exp(2 * e_t + c_t + u * (big_r + math.log(v) + c_t)) * (1 + lam) * (1 + u) - 1  # (n,)
    g = p - uniform
    g[np.arange(n), np.where(scored, targets, 0)] -= on
    g[~scored] = 0.0
    e_g = rho[:, None] * p + u * (np.abs(g) + rho[:, None] * p) + ETA32  # ETA32: exp's result underflows
    if label_smoothing:  # the rounded constants eps / V and 1 - eps, one more subtraction
        onehot = np.zeros_like(p)
        onehot[np.arange(n), np.where(scored, targets, 0)] = on
        e_g = e_g + u * (uniform + onehot) + 2 * u * (np.abs(g) + p + rho[:, None] * p + uniform)
    if gemm16:
        e_g = e_g + u_s * (np.abs(g) + e_g) + eta_s
    e_g[~scored] = 0.0
    ag = np.abs(g) + e_g

    if token_chunk is None:
        g_n = gamma(gemm_terms(n, device))
    else:
        g_n = gamma(gemm_terms(min(token_chunk, n), device) + math.ceil(n / token_chunk))
    raw = {
        "hidden": (e_g @ aw, ag @ aw, gamma(gemm_terms(v, device) + n_vchunks)),
        "weight": (e_g.T @ ah, ag.T @ ah, g_n),
        "bias": (e_g.sum(axis=0), ag.sum(axis=0), g_n),  # the same GEMM (a ones column), or column sums
    }
    grads = {"hidden": g @ w, "weight": g.T @ h, "bias": g.sum(axis=0)}
    out = {"loss": np.array(e_loss)}
    for name, (exact_err, abs_terms, g_sum) in raw.items():
        err = exact_err + g_sum * abs_terms + (n + v) * ETA32  # products and partial sums in the subnormal range
        scaled = abs(scale) * (err * (1 + u) ** 2 + np.abs(grads[name]) * ((1 + u) ** 2 - 1)) + ETA32
        out[name] = scaled + u_s * (abs(scale) * np.abs(grads[name]) + scaled) + eta_s
    out["grads"] = grads
    return out


def complex_diag_scan_units(seq: int, chunk: int) -> int:
    """n in E = gamma_n M_t for the chunked complex diagonal scan: 4L + 2 n_c + 19 (docs/numerics.md)."""
    return 4 * chunk + 2 * (-(-seq // chunk)) + 19


def complex_diag_weights(x, nu, h0=None) -> np.ndarray:
    """M_t = sum_{s <= t} |lambda|^(t-s) |x_s|_1 + |lambda|^(t+1) |h0|_1 per component, |z|_1 = |Re z| + |Im z|.

    x planes (2, B, S, D), nu (D,), h0 planes (2, B, D) or None -> (B, S, D); float64, rounded
    up by (1 + 2^-40) per step so the float64 accumulation cannot undercount.
    """
    r = np.exp(-np.exp(np.asarray(nu, dtype=np.float64)))
    l1 = np.abs(np.asarray(x, dtype=np.float64)).sum(axis=0)  # (B, S, D)
    m = np.zeros((l1.shape[0], l1.shape[2])) if h0 is None else np.abs(np.asarray(h0, dtype=np.float64)).sum(0)
    out = np.empty_like(l1)
    for t in range(l1.shape[1]):
        m = (r * m + l1[:, t]) * (1 + 2.0**-40)
        out[:, t] = m
    return out


def complex_diag_scan_abs(weights: np.ndarray, seq: int, chunk: int) -> np.ndarray:
    """E_t = gamma_n (1 + 2^-20) M_t + 2^-100, n = 4L + 2 n_c + 19, for the chunked scan in fp32.

    (1 + 2^-20) absorbs the float64 evaluation of the powers of lambda; 2^-100 covers fp32
    underflow (far below any fp16 ulp).
    """
    return gamma(complex_diag_scan_units(seq, chunk)) * (1 + 2.0**-20) * np.asarray(weights) + 2.0**-100



__all__ = [
    "ETA_NORMAL32", "HEBB_CHUNK", "LIBM_ULPS", "RSQRT_REL", "U", "abs_rel", "complex_diag_scan_abs",
    "complex_diag_scan_units", "complex_diag_weights", "device_kind", "embedding_abs", "gamma", "gemm_abs", "gemm_terms",
    "hebbian_eps", "in_ulps", "layer_norm_abs", "layer_norm_rstd_rel", "libm_rel", "linear_cross_entropy_abs", "mixed",
    "modrelu_abs", "one_rounding", "sum_abs", "ulp_bound",
]


# ------------------------------------------------------- the copy path (PointerMixture)
def _lse_rel(n_terms: int, value_range: float, device) -> tuple[float, float]:
    """(psi, lambda_log) of an fp32 log-sum-exp of ``n_terms`` max-shifted terms spanning
    ``value_range`` (the linear cross-entropy's step 2 with one chunk)."""
    lam = libm_rel("exp", device)
    phi = (1 + lam) * math.exp(U * value_range) - 1
    return (1 + phi) * (1 + gamma(max(n_terms - 1, 1))) - 1, libm_rel("log", device)


def _lse_abs(n_terms: int, value_range: float, lse: float, device) -> float:
    """|computed lse - lse of the computed inputs| for the fp32 log-sum-exp above."""
    psi, lam_log = _lse_rel(n_terms, value_range, device)
    return -math.log(1 - psi) + lam_log * (math.log(max(n_terms, 1)) + psi) + U * abs(lse)


def _unit_vector_err(x: np.ndarray, err: np.ndarray, n: int) -> np.ndarray:
    """Per row of x (rows, n): a bound of the 2-norm error of the fp32 unit vector computed from x^,
    |x^ - x| <= err elementwise (sum of squares, sqrt, division): 2||err||/||x|| + (gamma_n/2 + 2u)(1 + .)."""
    norm = np.linalg.norm(x, axis=-1)
    e = np.linalg.norm(err, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(norm > 0, 2 * e / norm, np.inf)
    return rel + (gamma(n) / 2 + 2 * U) * (1 + rel)


def pointer_nll_abs(h: np.ndarray, wq: np.ndarray, wk: np.ndarray, theta: float, wg: np.ndarray, bg: float,
                    ids: np.ndarray, targets: np.ndarray, vocab_nll: np.ndarray, exact: dict,
                    device="cpu") -> np.ndarray:
    """|computed - exact| bound of ``PointerMixture.nll`` per position (fp32 arithmetic, one row).

    ``h`` (S, d), ``wq``/``wk`` (dk, d), ``wg`` (d,), ``bg``, θ = exp(log θ) as the module holds it,
    ``vocab_nll`` (S,) the head's per-token losses (exact fp32 inputs), ``exact`` the float64
    intermediates of ``verification.test_pointer._exact``.  Steps (docs/numerics.md, "Copy path"):
    q, k, gate as fp32 GEMMs; the unit vectors' error; the cosine (a dk-term dot product of unit
    vectors); s = θ cos with θ = exp(.) (libm) and one rounding; log a = s - lse(s) over the earlier
    positions; log g, log(1 - g) as log-sigmoids (Lipschitz 1, exp and log1p errors); the mixture's
    terms one rounding each; nll = -lse(terms), 1-Lipschitz plus its own rounding.  "sentinel" (``exact["mode"]``):
    the head's log weight gate + log t - z and the copy terms s_j - z, z = logaddexp(gate + log t, lse(s)).
    """
    s_len, d = h.shape
    dk = wq.shape[0]
    habs = np.abs(h)
    e_q = gemm_abs(habs @ np.abs(wq).T, d, device)  # (S, dk)
    e_k = gemm_abs(habs @ np.abs(wk).T, d, device)
    u_q = _unit_vector_err(exact["q"], e_q, dk)  # (S,)
    u_k = _unit_vector_err(exact["k"], e_k, dk)
    m_dot = gamma(gemm_terms(dk, device))
    d_cos = u_q[:, None] + u_k[None, :] + u_q[:, None] * u_k[None, :] + m_dot * (1 + u_q[:, None]) * (1 + u_k[None, :])
    lam = libm_rel("exp", device)
    cos = exact["cos"]
    e_s = theta * (1 + lam) * (1 + U) * d_cos + (lam * (1 + U) + U) * theta * np.abs(cos)  # (S, S)
    e_gate = gemm_abs(habs @ np.abs(wg) + abs(bg), d + 1, device)  # (S,)
    lam_log = libm_rel("log", device)
    sentinel = exact["mode"] == "sentinel"
    out = np.zeros(s_len)
    for t in range(s_len):
        log_1mg, log_g = exact["log_1mg"][t], exact["log_g"][t]
        e_lg = e_gate[t] + lam + lam_log + 2 * U * (abs(log_g) + 1) if t else 0.0
        e_l1 = e_gate[t] + lam + lam_log + 2 * U * (abs(log_1mg) + 1) if t else 0.0
        if t:
            s_row = exact["s"][t, :t]
            e_row = e_s[t, :t]
            lse = exact["lse_s"][t]
            e_lse = float(e_row.max()) + _lse_abs(t, float(s_row.max() - s_row.min()) + 2 * float(e_row.max()), lse,
                                                  device)
        if sentinel and t:  # z = logaddexp(gate + log t, lse): 1-Lipschitz in its inputs plus its rounding
            sent, z = exact["sentinel"][t], exact["z"][t]
            e_sent = e_gate[t] + lam_log * math.log(t) + U * (abs(sent) + e_gate[t] + lam_log * math.log(t))
            e_in = max(e_sent, e_lse)
            e_z = e_in + _lse_abs(2, abs(sent - lse) + 2 * e_in, z, device)
            e_v = e_sent + e_z + U * (abs(sent - z) + e_sent + e_z)  # log of the head's weight
            terms_err = [e_v + U * (abs(exact["terms0"][t]) + e_v)]
        elif sentinel:  # position 0: the head's weight is exactly 1
            terms_err = [U * abs(exact["terms0"][t])]
        else:
            terms_err = [e_l1 + U * abs(exact["terms0"][t]) * (1 + U) + U * abs(vocab_nll[t])]
        values = [exact["terms0"][t]]
        if t:
            for j in range(t):
                if ids[j + 1] == targets[t]:
                    if sentinel:
                        term = s_row[j] - exact["z"][t]
                        values.append(term)
                        terms_err.append(e_row[j] + e_z + U * (abs(term) + e_row[j] + e_z))
                        continue
                    log_a = s_row[j] - lse
                    e_log_a = e_row[j] + e_lse + U * (abs(log_a) + e_row[j] + e_lse)
                    term = log_g + log_a
                    values.append(term)
                    terms_err.append(e_lg + e_log_a + U * (abs(term) + e_lg + e_log_a))
        e_max = max(terms_err)
        vals = np.array(values)
        out[t] = e_max + _lse_abs(len(values), float(vals.max() - vals.min()) + 2 * e_max, exact["nll"][t], device)
        out[t] += U * (abs(exact["nll"][t]) + out[t])
    return out
