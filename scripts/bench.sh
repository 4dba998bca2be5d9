#!/usr/bin/env bash
# Benchmarks entity-cdc against PostgreSQL's own logical decoding (pg_recvlogical) on the
# same WAL: throughput of the ceiling, `tail` and `run` (JSON, Avro), latency at 5,000
# changes/s, CRITICAL latency under a BULK import (lanes vs FIFO),
# peak memory and CPU per event. Starts its own PostgreSQL and broker and removes them
# afterwards, also on Ctrl-C. Writes docs/benchmarks.md (target/benchmarks-quick.md with
# --quick). See docs/benchmarks.md.
#
#   scripts/bench.sh [--quick] [--runs N] [--only a,b,c,latency,priority,ceiling,tail,run-json,run-avro]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/install-broker.sh

cargo build --release --locked -p entity-cdc --bin entity-cdc -p entity-cdc-bench --bin entity-cdc-bench
# Where cargo puts the build: target/ unless CARGO_TARGET_DIR says otherwise.
release="${CARGO_TARGET_DIR:-target}/release"
exec "$release/entity-cdc-bench" --entity-cdc "$release/entity-cdc" "$@"
