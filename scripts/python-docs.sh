#!/usr/bin/env bash
# Real documents for the benchmarks, offline: the HTML pages of the Python 3.11 documentation
# from Debian's python3.11-doc package, unpacked into DIR/html/.
# Usage: scripts/python-docs.sh DIR
set -euo pipefail
target=${1:?usage: scripts/python-docs.sh DIR}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
apt-get download python3.11-doc >/dev/null 2>&1 || { apt-get update -qq; apt-get download python3.11-doc >/dev/null; }
dpkg-deb -x python3.11-doc_*.deb unpacked
mkdir -p "$target"
rm -rf "$target/html"
cp -r unpacked/usr/share/doc/python3.11/html "$target/html"
echo "$(find "$target/html" -name '*.html' | wc -l) HTML pages in $target/html"
