#!/usr/bin/env bash
# bench/backup.sh [SIZE_MIB] [RUNS] [-json FILE]: backs up and restores a file of SIZE_MIB
# (default 1024 = 1 GiB) with the MBK-encrypted backup format (hsm/backup), beside Go's raw
# AES-256-GCM on the same data and `age` (X25519 recipient from age-keygen) on the same file, and
# prints MB/s, time and peak RSS of each (median of RUNS rounds, default 3; every method runs once
# per round and ratios are taken within a round) as a table with the targets: >= 90% of raw
# AES-GCM, faster than age, peak RSS under 64 MiB. -json FILE also writes the figures for
# bench/report. Needs `age` (scripts/deps installs it) and 5 x SIZE_MIB of free space on /dev/shm
# (or in $TMPDIR, or KQ_BENCH_DIR).
# Not part of scripts/test: it moves several GiB through the disk cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
size=${1:-1024}
runs=${2:-3}
# Files on tmpfs when it has room (5 x SIZE: input, three ciphertexts, one check), else $TMPDIR.
base=${TMPDIR:-/tmp}
if [ -z "${KQ_BENCH_DIR:-}" ] && [ -d /dev/shm ] &&
	[ "$(df -Pm /dev/shm | awk 'NR==2 {print $4}')" -gt $((size * 11 / 2)) ]; then
	base=/dev/shm
fi
base=${KQ_BENCH_DIR:-$base}
work=$(mktemp -d "$base/kq-backup-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
go build -o "$work/backupbench" ./bench/backup
"$work/backupbench" compare -size "$size" -runs "$runs" -dir "$work" "${@:3}"
