"""cProfile of a cold 80 % search's set-up (model load, importance pass, KL sensitivity table, dense reference passes):
what a cold run spends besides the 96 evaluations. Run 2026-12-07 11:26 UTC at 36b5a8b with ``NAS_LLM_CACHE`` pointed
at an empty folder; ``/tmp/y/base.txt`` held the flags of ``benchmarks/results/runs/s80c-0/run.json``'s command without
--out/--seed/--constraint. Output (cumulative, then internal time): ``3_setup_profile.txt``.
"""
import cProfile, pstats, sys, time, shlex
from nas_llm.cli import build_parser
from nas_llm.search.config import SearchConfig
from nas_llm.search import runner
from nas_llm.run import Run
BASE = open('/tmp/y/base.txt').read().strip()
argv = shlex.split(f"search --out /tmp/y/prof_run {BASE} --seed 0 --constraint 'params_ratio in [0.7826,0.8126]'")
ns = build_parser(argv).parse_args(argv)
config = SearchConfig.from_args(ns).validate()
run = Run(config.out)
def setup():
    with runner.torch_threads(config.threads):
        t = time.perf_counter(); sp = runner.build_problem(config, run); t1 = time.perf_counter()
        alloc = runner.allocation_seeds(config, sp, run); t2 = time.perf_counter()
        sp.setup(); t3 = time.perf_counter()
        print("build", t1 - t, "alloc", t2 - t1, "setup", t3 - t2, alloc["sensitivity_s"], flush=True)
cProfile.run("setup()", "/tmp/y/setup.prof")
p = pstats.Stats("/tmp/y/setup.prof"); p.sort_stats("cumulative").print_stats(60)
p.sort_stats("tottime").print_stats(30)
