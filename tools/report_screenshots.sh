#!/usr/bin/env bash
# Screenshots of the Snakemake report as a user sees it in a browser: the main page, the summary
# table, the ledger table and one comparison plot, taken with headless Chromium.
#
#   tools/report_screenshots.sh [OUT_DIR] [snakemake options, e.g. --configfile config/papers/<name>.yaml]
#
# Run from the repository root after `snakemake all` has finished (the report reads its results).
# It builds the report (`snakemake --report`), then opens a copy of it whose only addition is a
# line of script that clicks through to each view (the report's own app.setView, as its buttons
# do), and writes OUT_DIR (default: screenshots/) main.png, summary.png, ledger.png and
# comparison.png. Chromium: Debian's `chromium` package (`apt-get install -y chromium`).
set -euo pipefail

out=${1:-screenshots}
shift || true
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "report_screenshots.sh: no chromium found; install it with: apt-get install -y chromium" >&2
  exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

snakemake --report "$work/report.html" "$@" >"$work/report.log" 2>&1 || {
  echo "report_screenshots.sh: snakemake --report failed; its log:" >&2
  tail -n 20 "$work/report.log" >&2
  exit 1
}

# view NAME JS: a copy of the report that runs JS once the app has drawn, and its screenshot.
view() {
  local name=$1 js=$2
  local page="$work/$name.html"
  if [ -n "$js" ]; then
    # Before the page's own closing body tag (the last one: the report's scripts quote others).
    python3 - "$work/report.html" "$page" "$js" <<'PY'
import sys

source, page, js = sys.argv[1:]
text = open(source, encoding="utf-8").read()
end = text.rindex("</body>")
script = "<script>setTimeout(function () { %s }, 1000);</script>" % js
open(page, "w", encoding="utf-8").write(text[:end] + script + text[end:])
PY
  else
    cp "$work/report.html" "$page"
  fi
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
    --virtual-time-budget=8000 --screenshot="$out/$name.png" "file://$page" >/dev/null 2>&1
  echo "$out/$name.png"
}

# The result whose path ends in SUFFIX, shown the way its eye button shows it.
show() {
  local kind=$1 suffix=$2
  echo "var key = Object.keys(results).find(function (k) { return k.endsWith('$suffix'); });" \
    "app.setView({content: '$kind', contentPath: results[key].data_uri, resultPath: key});"
}

view main ""
view summary "$(show html tables/summary.html)"
view ledger "$(show html tables/reproduction.html)"
comparison=$(grep -o 'plots/comparison/[a-z]*\.png' "$work/report.html" | sort -u | head -n 1)
if [ -n "$comparison" ]; then
  view comparison "$(show img "$comparison")"
fi
