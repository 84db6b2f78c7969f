#!/usr/bin/env bash
# Build the PyInstaller bundle and check it the way a user would: the version, the demo in the
# terminal and the app's screenshots, all from the bundle alone (run outside the checkout).
# Usage: bash packaging/build_bundle.sh [OUTDIR]   (default: dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
work=$(mktemp -d)
python -m pip install -q "pyinstaller>=6.5"
t0=$(date +%s)
pyinstaller --noconfirm --clean --log-level WARN --distpath "$out" --workpath "$work/build" packaging/side-audit.spec
t1=$(date +%s)
exe="$(realpath "$out")/side-audit/side-audit"
echo "build: $((t1 - t0)) s; size: $(du -sh "$out/side-audit" | cut -f1)"
cd "$work"
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
"$exe" --version
"$exe" doctor || true
t2=$(date +%s)
"$exe" demo --quick --no-gui --workspace "$work/demo"
t3=$(date +%s)
echo "bundle demo --quick: $((t3 - t2)) s"
"$exe" report "$work/demo" --format pdf --out "$work/report.pdf"
"$exe" "$work/demo" --screenshot "$work/shots"
ls -la "$work/shots"
echo "bundle checks passed (scratch: $work)"
