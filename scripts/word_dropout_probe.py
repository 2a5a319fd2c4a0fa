"""Probe (docs/experiments.md section 24): does embedding dropout help Stage 1 more than Phase 2?

Embedding dropout (Gal & Ghahramani 2016; AWD-LSTM, Merity et al. 2018): each training step drops whole word
types, every occurrence of a dropped token in the batch alike, and scales the kept rows by 1 / (1 - p). Only the
token table is dropped; positions are added as before. Evaluation is untouched. The library is wrapped in this
process only, e.g.

    PYTHONPATH=. python scripts/word_dropout_probe.py --p 0.1 -- train --model stage1 --preset mix-tiny \
        --device cpu --label-smoothing 0.1 ... --final-eval-tokens 32768 --eval-stride 128

Stage 1's complex table is scaled row by row before the lookup (both planes by the same factor); Phase 2's and the
GPT's ``nn.Embedding`` outputs are scaled after it (the same product).
"""
import argparse
import json

import torch

import muse.nn.embedding as E
import muse.train.trainer as T
from muse import complex as C
from muse.cli import main

parser = argparse.ArgumentParser()
parser.add_argument("--p", type=float, required=True, help="probability of dropping a word type, in [0, 1)")
parser.add_argument("muse_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
if not 0.0 <= args.p < 1.0:
    raise SystemExit(f"--p must be in [0, 1), got {args.p}")


def type_mask(vocab: int, device, dtype) -> torch.Tensor:
    """(vocab,) factors: 0 for a dropped word type, 1 / (1 - p) for a kept one."""
    keep = torch.rand(vocab, device=device) >= args.p
    return (keep.float() / (1.0 - args.p)).to(dtype)


orig_forward = E.ComplexEmbedding.forward


def complex_forward(self, input_ids, positions=None):
    if not self.training or args.p == 0.0:
        return orig_forward(self, input_ids, positions)
    input_ids = E.check_token_ids("input_ids", input_ids, self.vocab_size, self.max_seq_len)
    pos = self.position.lookup(input_ids, positions)
    table = self.weight * type_mask(self.vocab_size, self.weight.device, self.weight.dtype)[None, :, None]
    z = E.embedding_unchecked(input_ids, C.ComplexTensor(table), pos, self.initial_phase)
    return C.dropout(z, self.p, self.training, mode=self.dropout_mode)


def scale_rows(module, inputs, output):
    if not module.training or args.p == 0.0:
        return output
    mask = type_mask(module.num_embeddings, output.device, output.dtype)
    return output * mask[inputs[0]].unsqueeze(-1)


state: dict = {}
orig_step = T.Trainer.train_step


def train_step(self):
    if "trainer" not in state:
        state["trainer"] = self
        table = getattr(self.model, "token_embedding", None)
        if table is not None:
            table.register_forward_hook(scale_rows)
        elif not isinstance(getattr(self.model, "embedding", None), E.ComplexEmbedding):
            raise SystemExit(f"the probe does not know the token table of {type(self.model).__name__}")
    return orig_step(self)


E.ComplexEmbedding.forward, T.Trainer.train_step = complex_forward, train_step
muse_args = args.muse_args[1:] if args.muse_args[:1] == ["--"] else args.muse_args
if main(muse_args) != 0:
    raise SystemExit("muse train failed")
trainer = state["trainer"]
cfg, final = trainer.cfg, trainer.final_eval
print(json.dumps({"model": cfg.model, "preset": cfg.preset, "seed": cfg.seed, "p": args.p,
                  "label_smoothing": cfg.label_smoothing, "steps": trainer.step, "loss": final["loss"],
                  "ppl": final["ppl"]}))
