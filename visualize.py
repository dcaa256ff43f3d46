"""See the search: cell drawings, architecture-weight heat maps, curves, TensorBoard and a run report.

    python visualize.py Att_DARTS                          # normal and reduction cell of a named genotype
    python visualize.py runs/search-XYZ/genotype.json --format svg
    python visualize.py runs/search-XYZ/                   # a run directory: cells, heat maps, curves, report.html

Genotype mode (a name in `genotypes.NAMED` or a `genotype.json`, SLNAS and NAG DAG JSON included)
writes `normal_<name>.<fmt>` and `reduce_<name>.<fmt>` plus their `.dot` sources into `--out`
(default: the current directory for a name, the JSON file's directory for a path).  The drawing
follows the DARTS/Att-DARTS `visualize.py`: graphviz, `rankdir=LR`, inputs "c_{k-2}"/"c_{k-1}"
(darkseagreen2), intermediate nodes "0".."n-1" (lightblue), output "c_{k}" (palegoldenrod); each
edge is labelled with its op and, on a second line, its attention; only the concatenated states
feed the output; a bottleneck attention draws states -> "c'_{k}" -> (attention) -> "c_{k}".  A 'none'
edge (a sparse genotype) is drawn dashed and grey, labelled 'none', so the drawing still has one edge
per genotype entry.  A NAG cell labels its vertices "<n> <op>" and leaves its edges unlabelled.
Without graphviz's `dot` on PATH only the `.dot` sources are written, with a line saying how to
render them.

Run-directory mode reads the files the search and train scripts write (`args.json`, `metrics.jsonl`,
`alphas.jsonl`, `genotype.json`; any subset) and writes into `--out` (default RUNDIR/report/) the
cells, one heat map per weight table of the last epoch's deviation from uniform, the weights over
epochs, loss/accuracy curves, the skip_connect count per epoch, the search diagnostics per epoch
(search_diagnostics.py) and a static `report.html` (relative image paths, no external assets).
The cells are drawn by drawing.py, the figures by plots.py and the page by report.py
(`write_report(run_dir)`); a tabular-search directory gets tabular.py's report.  `--plugins`
imports a user's attentions or ops, so that genotypes naming them load and draw.
"""
import os
import sys

import benchmark_table
import cli
import flags
import genotypes
import tabular
from drawing import FORMATS, dot_available, draw_genotype, render_hint
from report import write_report
from userio import UserError


def build_parser():
    parser = cli.default_parser('Draw the cells of a genotype, or everything for a run directory (cells, weight '
                                'heat maps, weights over epochs, curves, report.html).')
    parser.add_argument('target', metavar='NAME_OR_JSON_OR_RUNDIR',
                        help=f"a named genotype ({', '.join(genotypes.NAMED)}), a genotype .json, "
                             f"or a run directory")
    parser.add_argument('--format', default='png', choices=FORMATS, help='cell image format')
    parser.add_argument('--out', default=None,
                        help='output directory (default: . for a name, the .json file\'s directory, '
                             'RUNDIR/report for a run directory)')
    parser.add_argument('--heatmap', action='store_true',
                        help='insist on a run directory (CNAS spelling); its report holds the heat maps')
    benchmark_table.add_arguments(parser)
    return parser


@cli.cli
def main(argv=None):
    try:
        args = flags.parse_args(build_parser(), argv)
        if args.heatmap and not os.path.isdir(args.target):
            raise UserError(f"--heatmap needs a search run directory (with alphas.jsonl), not {args.target}")
        benchmark = benchmark_table.from_args(args)
        if os.path.isdir(args.target) and tabular.is_experiment(args.target):
            print(f'wrote {tabular.write_report(args.target, args.out)}')  # a tabular search's own report
            return 0
        if os.path.isdir(args.target):
            path = write_report(args.target, args.out, args.format, benchmark, args.benchmark_metric)
            print(f'wrote {path}')
            if not dot_available():
                print(f"graphviz's dot was not found: the cells were written as .dot sources only; {render_hint(args.format)}")
            return 0
        if args.target not in genotypes.NAMED and not os.path.exists(args.target) and os.sep in args.target:
            raise UserError(f"{args.target} does not exist; give a genotype name "
                            f"({', '.join(genotypes.NAMED)}), a genotype .json or a run directory")
        genotype = genotypes.load(args.target)
        if benchmark is not None:
            value, why = benchmark_table.derived_value(benchmark, args.benchmark_metric, genotype)
            print(f'{args.benchmark_metric}: {value:.6g}' if why is None else f'{args.benchmark_metric}: {why}')
        if args.target in genotypes.NAMED:
            name, out_dir = args.target, args.out or '.'
        else:
            name = os.path.splitext(os.path.basename(args.target))[0]
            out_dir = args.out or os.path.dirname(os.path.abspath(args.target))
        written = draw_genotype(genotype, name, out_dir, args.format)
        if not dot_available():
            print(f"graphviz's dot was not found; wrote {', '.join(written)}; {render_hint(args.format)}")
        else:
            for path in written:
                print(f'wrote {path}')
        return 0
    except UserError as exc:
        message = ' '.join(str(exc).split())
        print(f'error: {message}', file=sys.stderr)
        return 2



if __name__ == '__main__':
    sys.exit(main())
