"""One-process A/B of a model's compiled forms (issue 11): seed-preset inference (or, with ``--train``, the training
step) with the tree's form and with its latest change undone, timed in alternation on one GPU.

    python scripts/fusion_ab.py [--model stage1|gpt] [--device cuda] [--train] [--batch-size 4] [--seq 1024]
                                [--rounds 5] [--out FILE.json]

Inference forms: "library" (the tree: each Stage 1 seed block's second norm and the next norm in one pass,
``Stage1Model.trunk``) and "block after block" (each norm its own pass, as before); ``--model gpt`` runs the GPT
reference under bf16 autocast, as ``muse bench speed`` does (its forms are the same code).  Training forms (``--train``: the model and the
fused loss compiled as one graph, as ``muse train`` runs it, forward and backward): "library" (under autocast the
loss's chunk logits stay in the GEMM's bf16, which widens to fp32 exactly, and the gradient is written over them)
and "fp32 logits" (widened to fp32, and chunks sized for that, as before); without autocast (Stage 1) the two
are the same code. ``--head-view`` times inference with the padded head's rows read from their buffers (the library)
against a view of each parameter past its end (as before 835ce70, which max-autotune could not compile);
``--embedding-count`` Stage 1's first activations counted for the NaN statistics in the first norm's pass (the
library) against a pass of their own; ``--id-check`` the token ids' range checked once (the library) against
twice (the module, then its lookup, as before 19ee90a); ``--bound-rows`` the logits' finiteness bound per head row,
max_v (H norm(w_v) + |b_v|) (the library), against H max norm(w_v) + max |b_v| (as before the thirtieth session). ``--chunks`` times the library at several vocabulary widths per loss chunk instead, ``--keep``
the loss keeping its chunks' logits for backward (``keep_logits=True``) against
recomputing them (the default).  Each form is compiled with ``fullgraph=True`` (inductor's default mode) and captured in one CUDA graph, so
the host is out of the timing; the graphs are then replayed in turn, ``--rounds`` times, and each form's median
over the rounds is reported with every round's value and the largest difference of its output (the logits; in
training the head weight's gradient) from the reference form's.  Separate processes differ by about 1.5 %
(docs/performance.md); alternating in one process removes that spread from the comparison.  On the CPU (no CUDA
graphs) it times the compiled calls the same way, which only checks that the script runs.  A diagnostic: the
figures that go into docs/performance.md say which script and which device gave them.  Earlier versions timed
modReLU in the complex GEMM's epilogue (4dce78e; slower, removed), the head's GEMM over its padded storage
(dd29cf5; +10.8 % Stage 1, no gain for the GPT, kept), the residual inside LN2 against a separate add
(7eeb042; +3.0 %, kept), modReLU inside LN2's pass (3a92c80; no gain, removed) and the token tables' gradient over
the looked-up rows against ``embedding_dense_backward`` (90cca3f; +0.5 %, kept) and the loss's gradient chunks
scaled and rounded in one kernel against a scaled copy and a cast (1aeda6a; +0.6 % Stage 1, +1.2 % GPT, kept),
the log-sum-exp kernel reading a row wider than its tile once against twice (+0.7 % Stage 1, kept, the two-pass
form removed), and the GPT's chunk logits kept bf16 against widened to fp32 (+31 %, kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

import muse.complex as C
from muse._checks import check_token_ids
from muse.models import build_model
from muse.models.base import LanguageModel
from muse.models.stage1 import Stage1Model
from muse.nn import ComplexEmbedding, PaddedLinear
from muse.train import loss
from muse.train.loss import compile_model_loss


def _block_after_block(self, x, diag=None):
    """Stage 1's blocks one after another, each norm its own pass (before the paired norms)."""
    return LanguageModel.trunk(self, x, diag)


_LOGITS = loss._VocabChunks.logits


def _fp32_logits(self, v0):
    """A chunk's logits widened to the storage dtype, as before (fp32 under autocast: twice the bytes)."""
    return _LOGITS(self, v0).to(self.storage)


def _fp32_chunk(hidden, weight, impl):
    """The chunk width as before: under autocast, 8 bytes an entry and not in place."""
    if loss._autocast_gemm_dtype(hidden) is None:
        return _DEFAULT_CHUNK(hidden, weight, impl)
    n = hidden.numel() // max(hidden.shape[-1], 1)
    return loss.auto_chunk_size(weight.shape[0], max(n, 1), hidden.dtype, impl=impl)


def _counted_apart(self, x, diag=None):
    """Stage 1's paired blocks with the first activations counted in a pass of their own, as before 9e2f472 (no diag or
    hooks in this script)."""
    self._count_nonfinite(0, x)
    n = self.blocks[0].norm1(x)
    flags = torch.zeros(len(self.blocks), dtype=torch.int32, device=n.device)
    for i, block in enumerate(self.blocks):
        then = self.blocks[i + 1].norm1 if i + 1 < len(self.blocks) else self.final_norm
        x, n = block.norm2.pair(block.branch(n), x, then, nonfinite=(flags, i))
    self._count_nonfinite_flags(1, flags)
    return n


def _ids_checked_twice(self, input_ids, positions=None):
    """The token embedding before 19ee90a: the module checked the ids, then ``C.embedding`` checked them again."""
    input_ids = check_token_ids("input_ids", input_ids, self.vocab_size, self.max_seq_len)
    pos = self.position.lookup(input_ids, positions)
    z = C.embedding(input_ids, C.ComplexTensor(self.weight), pos, self.initial_phase)
    return C.dropout(z, self.p, self.training, mode=self.dropout_mode)


def _patch_embedding(form) -> None:
    ComplexEmbedding.forward = form


def _head_view_forward(self, x):
    """The padded head's forward before 835ce70: the padded rows as views of the parameters past their ends."""
    w, b = self.weight, self.bias
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b))
    rows = self.weight_rows.shape[0]
    if grad or rows == self.out_features:
        return self.gemm(x, w, b)
    w = w.as_strided((rows, self.in_features), (self.in_features, 1))
    b = None if b is None else b.as_strided((rows,), (1,))
    return self.gemm(x, w, b)[..., : self.out_features]


def _bound_summed(self, h, dtype) -> None:
    """The logits bound before the thirtieth session: H max norm(w_v) + max |b_v| (three reductions and a product)."""
    if h.numel() == 0:
        return
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    w, b = self.lm_head.weight, self.lm_head.bias
    bound = (torch.linalg.vector_norm(h, dim=-1, dtype=acc).amax()
             * torch.linalg.vector_norm(w, dim=-1, dtype=acc).amax())
    if b is not None:
        bound = bound + b.abs().amax().to(acc)
    self._nonfinite_count[-1] += ~(bound < torch.finfo(dtype).max * (1 - 2**-8))


def _patch_bound(form) -> None:
    LanguageModel._count_logits_unproven = form


def _patch_head(form) -> None:
    PaddedLinear.forward = form


def _patch_trunk(form) -> None:
    Stage1Model.trunk = form


_DEFAULT_CHUNK = loss.default_chunk_size


def _patch_loss(form) -> None:
    loss._VocabChunks.logits, loss.default_chunk_size = form


def _patch_chunk(rows) -> None:
    """The vocabulary rows per loss chunk: ``rows``, or the library's choice when None."""
    loss.default_chunk_size = _DEFAULT_CHUNK if rows is None else (lambda hidden, weight, impl: rows)


#: name -> form; the first is the tree's, the last the reference the outputs are compared with
INFER = {"library": Stage1Model.trunk, "block after block": _block_after_block}
TRAIN = {"library": (_LOGITS, _DEFAULT_CHUNK), "fp32 logits": (_fp32_logits, _fp32_chunk)}


def _replayer(fn, device: torch.device):
    """A zero-argument call that runs ``fn()`` once: a CUDA graph's replay on CUDA (warmed up first on a side
    stream, so Triton's autotuning stays outside the capture), ``fn`` itself elsewhere."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _seconds(call, device: torch.device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(call, warmup=25, rep=200, return_mode="median") / 1e3
    call()
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="stage1", choices=("stage1", "gpt"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train", action="store_true", help="time the compiled training step instead of inference")
    p.add_argument("--chunks", default=None,
                   help="with --train: comma-separated vocabulary rows per loss chunk, each a form beside the "
                        "library's own choice (the reference)")
    p.add_argument("--id-check", action="store_true",
                   help="inference: the token ids' range checked once (the library) against twice")
    p.add_argument("--embedding-count", action="store_true",
                   help="inference: the first activations counted in the first norm's pass against a pass apart")
    p.add_argument("--head-view", action="store_true",
                   help="inference: the padded head's rows from buffers against views past the parameters' ends")
    p.add_argument("--bound-rows", action="store_true",
                   help="inference: the logits bound per head row (the library) against H max|w| + max|b|")
    p.add_argument("--keep", action="store_true",
                   help="with --train: the loss keeping its chunks' logits for backward against recomputing them")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if (args.chunks or args.keep) and not args.train:
        p.error("--chunks and --keep need --train")
    if (args.head_view or args.embedding_count or args.id_check or args.bound_rows) and args.train:
        p.error("--head-view, --embedding-count, --id-check and --bound-rows time inference (no --train)")
    device = torch.device(args.device)
    model = build_model(args.model, preset=args.preset, device=device).train(args.train)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.model == "gpt"
                else contextlib.nullcontext())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq + 1), generator=gen).to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    C.set_gemm_policy()  # compiling MUSE ops on CUDA needs the process-wide GEMM policy first
    forms, patch = (TRAIN, _patch_loss) if args.train else (INFER, _patch_trunk)
    if args.chunks:
        forms = {**{f"chunk {int(c)}": int(c) for c in args.chunks.split(",")}, "library": None}
        patch = _patch_chunk
    if args.head_view:
        forms, patch = {"library": PaddedLinear.forward, "view past the end": _head_view_forward}, _patch_head
    if args.embedding_count:
        forms = {"library": Stage1Model.trunk, "embedding counted apart": _counted_apart}
    if args.id_check:
        forms, patch = {"library": ComplexEmbedding.forward, "ids checked twice": _ids_checked_twice}, _patch_embedding
    if args.bound_rows:
        forms, patch = {"library": LanguageModel._count_logits_unproven, "bound summed": _bound_summed}, _patch_bound
    keeps = {}
    if args.keep:  # the same library code, the loss's option differs
        forms, patch, keeps = {"library": None, "keep logits": None}, _patch_chunk, {"keep logits": True}
    calls, compile_s, outputs, kept, peaks = {}, {}, {}, {}, {}
    try:
        for name, form in forms.items():
            patch(form)
            torch._dynamo.reset()
            if args.train:
                loss_fn = compile_model_loss(model, keep_logits=keeps.get(name, False))

                def call(loss_fn=loss_fn):
                    with autocast:
                        value = loss_fn(inputs, targets)
                    value.backward()
                    return model.lm_head.weight.grad
            else:
                net = torch.compile(model, fullgraph=True)

                def call(net=net):
                    with torch.no_grad(), autocast:
                        return net(inputs)

            model.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # the same dropout masks for every form's compared output
            t0 = time.perf_counter()
            outputs[name] = call().float().clone()
            compile_s[name] = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":  # the step's own peak, above what is alive before it
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                call()
                torch.cuda.synchronize(device)
                peaks[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                model.zero_grad(set_to_none=True)
            calls[name] = _replayer(call, device)
            # the captured backward accumulates into the gradients that existed at capture: keep them alive for
            # its replays, and let the next form's warm-up allocate its own
            kept[name] = [q.grad for q in model.parameters()]
            model.zero_grad(set_to_none=True)
    finally:
        patch(forms["library"])
    reference = list(forms)[-1]
    rounds = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, call in calls.items():
            rounds[name].append(_seconds(call, device))
    tokens = args.batch_size * args.seq
    report = {"model": args.model, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "mode": "train" if args.train else "inference",
              "batch_size": args.batch_size, "seq": args.seq, "rounds": args.rounds, "reference": reference,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "forms": {}}
    for name, times in rounds.items():
        med = statistics.median(times)
        diff = float((outputs[name] - outputs[reference]).abs().max())
        report["forms"][name] = {"median_ms": med * 1e3, "tok_s": tokens / med, "rounds_ms": [t * 1e3 for t in times],
                                 "first_call_s": compile_s[name], "max_abs_diff_vs_reference": diff,
                                 "peak_MiB": peaks.get(name)}
        peak = f"; peak {peaks[name]:.1f} MiB" if name in peaks else ""
        print(f"{name:>20}: {med * 1e3:.4f} ms ({tokens / med:,.0f} tok/s); rounds "
              + ", ".join(f"{t * 1e3:.4f}" for t in times)
              + f"; first call {compile_s[name]:.1f} s; max |output - {reference}'s| {diff:.3g}{peak}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
