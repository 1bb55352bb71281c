#!/bin/bash
# The attribute-model sweep on a lent GPU (models/gpu_sweep/README.md): run from the project root,
# with the bundle that bundle.py makes in .gpu/ beside it.
set -u
DEV=${DEV:-cuda}; LIMIT=${LIMIT:-}; E1=${E1:-10}; E2=${E2:-5}; EB=${EB:-15}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 FASHION_DATA=$PWD/.gpu/data FASHION_CACHE=/tmp/cache PYTHONPATH=$PWD/.gpu/py:$PWD OMP_NUM_THREADS=2
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
L=/tmp/logs; mkdir -p $L /tmp/r
nvidia-smi -L; nproc; free -g | head -2
$PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())"
$PY models/gpu_sweep/prep.py || exit 1
TRAIN="$PY -m cluster.cli train attributes --device $DEV --frozen-blocks 0 ${LIMIT:+--limit $LIMIT}"
$TRAIN --limit 128 --epochs 1 --hard 0.5 --hard-views 1 --workers 8 --image-size 64 --out /tmp/smoke --json > $L/smoke.log 2>&1 \
  && OUT= $PY models/gpu_sweep/evalval.py /tmp/smoke smoke 32 >> $L/smoke.log 2>&1 || { cat $L/smoke.log; exit 1; }
stamp smoke ok; tail -2 $L/smoke.log
OMP_NUM_THREADS=1 $PY models/gpu_sweep/views.py ${VW:-10} ${LIMIT:-0} 224 192 128 > $L/views.log 2>&1 &
waitviews() { while [ ! -e /tmp/views-$1.done ]; do sleep 2; done; }
two_stage() {   # name size: 10 epochs on studio photos, then 5 with half of each batch hard views
  timeout 220 $TRAIN --image-size $2 --epochs $E1 --out /tmp/r/$1 > $L/$1.log 2>&1; stamp "$1 stage 1 done"
  waitviews $2
  timeout 140 $TRAIN --init /tmp/r/$1/last.pt --hard 0.5 --hard-views 4 --epochs $E2 --lr 1e-3 --out /tmp/r/$1h \
    > $L/$1h.log 2>&1; stamp "$1 stage 2 done"
}
two_stage a224 224 & two_stage c192 192 & two_stage d128 128 &
( waitviews 224; stamp "views 224 ready"
  timeout 340 $TRAIN --image-size 224 --epochs $EB --hard 0.5 --hard-views 4 --out /tmp/r/b224 > $L/b224.log 2>&1
  stamp "b224 done" ) &
wait
stamp training done
for r in a224 c192 d128; do OUT= timeout 120 $PY models/gpu_sweep/evalval.py /tmp/r/$r $r ${LIMIT:+$LIMIT} > $L/eval-$r.json 2>&1 & done
for r in a224h c192h d128h b224; do OUT=$OUT timeout 120 $PY models/gpu_sweep/evalval.py /tmp/r/$r $r ${LIMIT:+$LIMIT} > $L/eval-$r.json 2>&1 & done
wait
stamp eval done
cat $L/eval-*.json > $OUT/eval.jsonl; cat $L/eval-*.json
for f in $L/*.log; do echo "== $f"; cat $f; done > $OUT/train.log
grep -h '"epoch"' $L/*.log | tail -40
ls -la $OUT
