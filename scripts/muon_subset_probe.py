"""Probe (docs/experiments.md section 30): which matrices carry Muon's gain?

`--optimizer muon` gives Muon every linear weight but the head (`muse.train.optim.muon_parameter_names`). This
probe keeps only those whose name matches ``--only`` (a regular expression, e.g. ``\\.ffn\\.`` or ``\\.mixers?\\.``);
the rest go back to AdamW. The library is patched in this process only, e.g.

    PYTHONPATH=. python scripts/muon_subset_probe.py --only '\\.ffn\\.' -- train --model phase2 --preset tiny \
        --optimizer muon --muon-rms 4 --device cpu ...
"""
import argparse
import re

import muse.train.trainer as T
from muse.cli import main

parser = argparse.ArgumentParser()
parser.add_argument("--only", required=True, help="regular expression over parameter names")
parser.add_argument("muse_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
pattern = re.compile(args.only)
every = T.muon_parameter_names


def chosen(model):
    names = {n for n in every(model) if pattern.search(n)}
    print(f"[muon_subset_probe] Muon on {len(names)} matrices: {sorted(names)}", flush=True)
    return names


T.muon_parameter_names = chosen
muse_args = args.muse_args[1:] if args.muse_args[:1] == ["--"] else args.muse_args
raise SystemExit(main(muse_args))
