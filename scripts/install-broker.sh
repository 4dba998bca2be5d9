#!/usr/bin/env bash
# Installs tansu, the in-memory Kafka-protocol broker the tests and the demo start, unless it
# is already on PATH or in ~/.cargo/bin. Its build takes about 15 minutes, so it is done once
# per machine and reused. Pinned to the 0.6 series: the tests rely on its command line
# (`tansu broker --listener-url … --storage-engine memory://…`); --locked keeps its
# dependencies as released.
set -euo pipefail

if command -v tansu >/dev/null 2>&1; then
  echo "install-broker: tansu already installed at $(command -v tansu)" >&2
  exit 0
fi
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  echo "install-broker: tansu already installed at ${CARGO_HOME:-$HOME/.cargo}/bin/tansu" >&2
  exit 0
fi

echo "install-broker: building tansu 0.6 (about 15 minutes)" >&2
cargo install tansu --version '~0.6' --locked --features dynostore
