# Fixed-fake critics, paired seeds, one job per (seed, family) so every finished critic is
# kept: WGAN-GP (lam 34) vs WWGAN intensity (lam 2.5) vs the Sobolev control (lam 2.5).
# First make $W/pool-gp.npz with the pilot's first two commands (README, "Geometry or
# strength?": `wwgan train ... --out $W/gen-gp`, then `fixed_fake_critics.py pool`).
cd "$(git rev-parse --show-toplevel)"  # was /work/main
git log -1 --format=%H
P=".venv/bin/python"
export OMP_NUM_THREADS=1 WWGAN_CACHE_DIR=${WWGAN_CACHE_DIR:-data/cache}
W=${W:-runs/fixed-fake}
COMMON="--pool $W/pool-gp.npz --width 64 --batch-size 64 --num-images 256 --shift-images 64 --steps 500"
for seed in 0 1 2 3 4 5 6 7 8 9; do
  for fam in wgan-gp:34 wwgan-intensity:2.5 sobolev:2.5; do
    f=${fam%%:*}; lam=${fam##*:}
    out=$W/critics/$f-seed$seed.json
    [ -f $out ] || $P scripts/fixed_fake_critics.py train $COMMON --family $f --lam $lam --seed $seed --out $out
  done
  date
done
echo done
