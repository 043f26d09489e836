#!/bin/sh
# Entry point of the training image.
#   no arguments: train the default model into $FOLDSERVE_MODEL_DIR unless it already holds a
#                 model.onnx (then do nothing), so `docker compose up` trains once per volume;
#   arguments:    run them as the command (e.g. `foldserve train --data /data/my.csv --out ...`).
# Training goes to a scratch directory beside the target and is renamed into place when complete,
# so an interrupted run never leaves a half-written model for the server to load.
set -eu
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
out="${FOLDSERVE_MODEL_DIR:-/models/default}"
if [ -f "$out/model.onnx" ]; then
    echo "foldserve trainer: $out/model.onnx exists; nothing to do"
    exit 0
fi
scratch="$out.partial"
rm -rf "$scratch"
echo "foldserve trainer: training ${FOLDSERVE_TRAIN_ARCH:-mlp} on ${FOLDSERVE_TRAIN_DATA:-digits} into $out"
# shellcheck disable=SC2086  # FOLDSERVE_TRAIN_ARGS is a list of extra flags, split on purpose
foldserve train --data "${FOLDSERVE_TRAIN_DATA:-digits}" --arch "${FOLDSERVE_TRAIN_ARCH:-mlp}" \
    --out "$scratch" ${FOLDSERVE_TRAIN_ARGS:-}
test -f "$scratch/model.onnx"
rm -rf "$out"
mv "$scratch" "$out"
echo "foldserve trainer: wrote $out/model.onnx"
