"""Training-free search: `train_search.py --strategy proxy --proxy NAME --samples N` (registered in
registry.STRATEGIES as 'proxy').

Mellor, Turner, Storkey and Crowley, "Neural Architecture Search without Training", ICML 2021
(BayesWatch/nas-without-training `search.py`): draw N architectures from the space, score each
untrained network with a zero-cost proxy (proxies.py; NASWOT's by default) and return the best,
with no weight trained.  Here the space is the search's (--location, --primitives,
--num_meta_node: what the DARTS derivation can return, `search_space.sample_genotypes`, drawn with
a seed of their own from --seed), every architecture is scored in its evaluation network at the
search's --init_channels and --layers (`ranking.network_factory`, initialised with --seed) on the
same --batch_size training images drawn with --seed, and ties go to the first drawn.

The run directory gets args.json, log.txt, proxy_scores.jsonl (one line per scored architecture,
what --resume keeps), proxy_ranking.json (every architecture, best first) and genotype.json.
"""
import math
import time

from tqdm import tqdm

import genotypes
import proxies
import ranking
import search_space
import utils
from cli import logger
from registry import STRATEGIES
from runs import Run
from search import Strategy


@STRATEGIES.register('proxy')
class ProxyStrategy(Strategy):
    help = ('training-free (NASWOT, Mellor et al. 2021): the best of --samples architectures drawn from the space '
            'by the zero-cost --proxy of its untrained network (proxy_search.py)')

    def add_arguments(self, parser):
        g = parser.add_argument_group('training-free search (--strategy proxy)')
        g.add_argument('--proxy', default='naswot', choices=list(proxies.PROXIES),
                       help='the zero-cost proxy that ranks the drawn architectures (proxies.py)')
        g.add_argument('--samples', type=int, default=100,
                       help='architectures drawn and scored (NASWOT reports 10 and 100)')

    def check(self, args, model):
        size = search_space.space_size(model.lists, model.steps)
        if args.samples > size:
            raise utils.UserError(f"--samples {args.samples} is more than the {size} architectures of the space; "
                                  f"lower it")

    def search(self, args, model, info, device, signature, guards):
        proxy_search(args, info, device, signature)
        return False


def proxy_search(args, info, device, signature):
    """Score --samples drawn architectures by --proxy; the best goes to genotype.json."""
    run = Run(args.save, args, args.resume, kind='search', signature=signature)
    candidates = search_space.sample_genotypes(args.samples, f'proxy-{args.seed}', args.location, args.primitives,
                                               args.num_meta_node)
    build = ranking.network_factory(args.dataset, info, args.init_channels, args.layers)
    batch = ranking.proxy_batch(args.dataset, args.data, args.batch_size, args.seed, info.image_size)
    run.start()  # the data are there: the run directory may be written
    lines = run.path('proxy_scores.jsonl')
    scores = {record['sample']: record['score'] for record in ranking.read_records(lines)}
    logger.info('training-free search: %s of %d architectures, %d already scored', args.proxy, len(candidates),
                len(scores))
    for index, genotype in enumerate(tqdm(candidates, desc=args.proxy, disable=args.no_progress)):
        if index in scores:
            continue
        began = time.perf_counter()
        scores[index] = ranking.score_architecture(build, genotype, [args.proxy], batch, args.seed, device)[args.proxy]
        ranking.append_record(lines, {'sample': index, 'score': scores[index],
                                      'seconds': time.perf_counter() - began})
    scored = [(index, {args.proxy: scores[index]}) for index in range(len(candidates))]
    winner, _ = ranking.best(scored, args.proxy)
    ranked = sorted(range(len(candidates)), key=lambda i: (math.isnan(scores[i]), -scores[i], i))  # NaN last
    utils.atomic_write_json(run.path('proxy_ranking.json'), {
        'proxy': args.proxy, 'architectures': [{'sample': i, 'score': scores[i],
                                                'genotype': genotypes.to_dict(candidates[i])} for i in ranked]})
    genotypes.save(candidates[winner], run.path('genotype.json'))
    logger.info('genotype = %s (%s %.6g)', candidates[winner], args.proxy, scores[winner])
    logger.info('search done; genotype written to %s', run.path('genotype.json'))
    print(run.path('genotype.json'))
