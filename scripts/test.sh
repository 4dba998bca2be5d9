#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (PostgreSQL 15
# server binaries, openssl for the TLS tests), then `cargo test` over the workspace. The
# integration tests start their own throwaway PostgreSQL servers (initdb in a temporary
# folder, wal_level=logical, a free loopback port) and stop them when they end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The Kafka-protocol broker (tansu) the sink tests start; built once per machine.
scripts/install-broker.sh

# Integration tests each start their own servers; two at a time fit this kind of machine.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace --all-targets --locked "$@"
