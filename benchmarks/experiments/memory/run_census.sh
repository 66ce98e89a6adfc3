# As run on 2026-12-07 (12:17 before the fix -> census_s80mc-1.log; 12:33 after it -> census_s80mf-1.log, run folder
# runs/s80mf-1). BASE = the flags of benchmarks/results/runs/s80k-1/run.json's command without --out/--seed/--constraint.
cd /work/main; export NAS_LLM_DATA=/work/shared/data
BASE="$(cat /tmp/y/base.txt)"
eval "flock /tmp/nasllm-heavy.lock env NAS_LLM_CACHE=/tmp/x/coldcache /usr/bin/time -v .venv/bin/python benchmarks/experiments/memory/2_census.py /tmp/y/census.log runs/s80mc-1 $BASE --seed 1 --constraint 'params_ratio in [0.7826,0.8126]'" > /tmp/y/census.out 2>&1
