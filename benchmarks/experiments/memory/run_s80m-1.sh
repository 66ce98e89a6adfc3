cd /work/main
export NAS_LLM_DATA=/work/shared/data
log(){ echo "[$(date +%H:%M:%S)] $*" >> /tmp/x/chain16.log; }
BASE="--model smollm2-135m --driver pymoo --algorithm auto --sampler nsga2 --objectives perplexity_reformed,params_ratio --evaluations 96 --pop-size 16 --study-name nas-llm --workers 1 --join-timeout 600.0 --granularity 64 --no-layer-drop --calibration wikitext2-valid --calib-samples 32 --calib-seq-len 256 --calib-seed 0 --ppl-samples 8 --ppl-seq-len 2048 --importance wanda --screen 0.125 --rescore-fronts 1 --halving 8 --rung-step 4 --screen-dtype bfloat16 --head-chunk 256 --sens-samples 4 --sens-seq-len 256 --sens-points 4 --sens-metric kl --threads 2 --init importance --no-progress"
while ! grep -q "chain15 done" /tmp/x/chain15.log 2>/dev/null; do sleep 10; done
log "s80m-1 start (NAS_LLM_CACHE=/tmp/x/coldcache: the table from s80c-1)"
flock /tmp/nasllm-heavy.lock bash -c "NAS_LLM_CACHE=/tmp/x/coldcache /usr/bin/time -v .venv/bin/nas-llm search --out runs/s80m-1 $BASE --seed 1 --constraint 'params_ratio in [0.7826,0.8126]' > /tmp/x/s80m-1.log 2>&1" &
sleep 5
while kill -0 $! 2>/dev/null; do
  P=$(pgrep -f "nas-llm search --out runs/s80m-1" | tail -1)
  echo "$(date +%H:%M:%S) $(grep VmRSS /proc/$P/status 2>/dev/null | awk '{print $2}') $(ls runs/s80m-1 2>/dev/null | tr '\n' ,) $(wc -l < runs/s80m-1/evaluations.jsonl 2>/dev/null)" >> /tmp/x/rss.log
  sleep 15
done
log "s80m-1 done"
