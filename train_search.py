"""Att-DARTS / DARTS cell search.

    python train_search.py --unrolled --location after_every
    python train_search.py --dataset fashion-mnist --subset 2000 --epochs 2 --layers 5 --init_channels 8

Writes into the run directory (--save): genotype.json every epoch, alphas.jsonl (softmaxed
architecture weights per epoch), metrics.jsonl (with the diagnostics of search_diagnostics.py),
log.txt, checkpoint.pt (resume with --resume).  --strategy rsws: random search with weight sharing
on the same supernet (rsws.py); --plugins adds a user's ops, attentions or strategies.
--partial_channels and --edge_normalization: PC-DARTS (see model_search.py); the collapse guards
of DARTS-, P-DARTS and DARTS+: collapse_guards.py; --stage_layers and --stage_keep: P-DARTS's
progressive search.  The search itself is search.py.

    python train_search.py --partial_channels 4 --edge_normalization --batch_size 256   # PC-DARTS
    python train_search.py --stage_layers 5 11 17 --stage_keep 5 3 --epochs 25 --max_skip_connect 2   # P-DARTS
    python train_search.py --partial_channels 4 --edge_normalization --batch_size 256 --recompute_cells
"""
import sys

import cli
import search


@cli.cli
def main(argv=None):
    return search.run(search.parse(argv))


if __name__ == '__main__':
    sys.exit(main())
