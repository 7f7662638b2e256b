#!/bin/sh
# APDU round trip through the real PC/SC stack: ebfe/scard -> libpcsclite -> pcscd -> vpcd ->
# a virtual TCOS card (pinpad/vpcd, TCP_QUICKACK set). The benchmark starts its own pcscd
# (see pinpad/pcsc TestMain) and prints the median and 99th percentile in microseconds.
# Needs root (private mount namespace), pcscd and vsmartcard-vpcd (scripts/deps).
set -eu
cd "$(dirname "$0")/.."
N="${N:-5000}"
go test -count=1 -run '^$' -bench '^BenchmarkPCSCAPDURoundTrip$' -benchtime="${N}x" ./pinpad/pcsc |
	awk '/^Benchmark/ { for (i = 1; i <= NF; i++) { if ($i == "median-µs") m = $(i-1); if ($i == "p99-µs") p = $(i-1) }
	       printf "APDU round trip through pcscd + vpcd (%s APDUs): median %s µs, p99 %s µs\n", $2, m, p; found = 1 }
	     /^(FAIL|---)/ { print }
	     END { if (!found) exit 1 }'
