#!/bin/bash
# Writes the files in this folder with pcae as it was on 2026-12-02 (commit after 63ab36b): small
# outputs of every kind a user keeps - checkpoints, a latents folder, a face cache - that later
# versions must keep loading (tests/test_old_files.py). Run from the repository root; do not rerun
# after a format change: these are the old files.
set -e
D=tests/data/v1
T=$(mktemp -d)
export PCAE_DATA_BUNDLED=1 PCAE_CACHE_DIR=$T/cache PCAE_OFFLINE=1 OMP_NUM_THREADS=1
pcae() { .venv/bin/pcae "$@"; }
pcae train --condition label --image-size 8 --channels 4 --n-layers 1 --steps 3 --batch-size 8 \
  --eval-images 16 --judge-images 0 --n-samples 0 --eval-every 0 --out $T/pixelcnn
pcae train-ae --bottleneck 4 --channels 4 --encoder-channels 4 --spatial-channels 4 --steps 3 --batch-size 8 \
  --eval-images 16 --judge-images 0 --n-samples 0 --eval-every 0 --out $T/ae
pcae embed --checkpoint $T/ae/best.pt --limit 40 --out $T/latents
mkdir -p $T/photos
for f in astronaut camera; do cp tests/data/$f.jpg $T/photos/; done
.venv/bin/python - "$T/photos" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageOps
folder = Path(sys.argv[1])
for name in ("astronaut", "camera"):
    im = Image.open(folder / f"{name}.jpg")
    im.thumbnail((128, 128))
    im.save(folder / f"{name}.jpg")
    ImageOps.mirror(im).save(folder / f"{name}_flip.jpg")
PY
pcae train-portraits --data folder:$T/photos --cache $T/faces.h5 --image-size 8 --facenet-weights random \
  --facenet-crop-size 80 --steps 1 --batch-size 2 --channels 6 --n-layers 1 --first-kernel-size 3 \
  --n-samples 0 --eval-every 0 --checkpoint-every 0 --out $T/portraits
rm -rf $D/latents
cp $T/pixelcnn/best.pt $D/pixelcnn.pt
cp $T/ae/best.pt $D/autoencoder.pt
cp -r $T/latents $D/latents
cp $T/faces.h5 $D/faces.h5
ls -la $D $D/latents
rm -rf "$T"
