#!/bin/sh
# Builds the workspace-server stand-in (Go, gin, lib/pq) offline in GOPATH
# mode against the Debian packages golang-go, golang-github-gin-gonic-gin-dev
# and golang-github-lib-pq-dev. Prints the binary's path.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
out=$target/standin/workspace-server
command -v go >/dev/null 2>&1 || {
	echo "build.sh: go not found; apt-get install -y golang-go golang-github-gin-gonic-gin-dev golang-github-lib-pq-dev" >&2
	exit 127
}
gopath=$target/standin/gopath
mkdir -p "$gopath/src" "$target/standin"
ln -sfn "$here" "$gopath/src/standin"
cd "$gopath/src/standin"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= GOCACHE="${GOCACHE:-$target/standin/gocache}" \
	go build -o "$out.tmp.$$" standin
mv -f "$out.tmp.$$" "$out"
echo "$out"
