"""Speed and memory of the search and training steps, measured the same way every time.

    python bench.py                                   # the default suite on this machine, JSON to bench.json
    python bench.py --only search_first search_second --batch_size 16 --out bench-b16.json
    python bench.py --device cuda

The measurements and the record are described in step_measurements.py and docs/benchmarks.md.
"""
import sys

import cli
import step_measurements


@cli.cli
def main(argv=None):
    return step_measurements.run(step_measurements.build_parser().parse_args(argv), argv)


if __name__ == '__main__':
    sys.exit(main())
