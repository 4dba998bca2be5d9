#!/usr/bin/env bash
# Checks docker/ without a Docker engine (none exists on the build machines):
#   - docker/compose.yaml parses as YAML and has the expected services (PyYAML);
#   - the Rust tests of integration/tests/docker.rs: compose settings, the sample
#     connector.yaml under compose's environment, docker/init.sql plus `setup` on a real
#     PostgreSQL, and the Dockerfile's stages and commands;
#   - with --build, the builder stage's command itself (a release build, several minutes).
# What it cannot do: `docker build` and `docker compose up`.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: pip install pyyaml (or apt-get install python3-yaml)")
with open("docker/compose.yaml") as f:
    compose = yaml.safe_load(f)
services = compose.get("services", {})
missing = {"postgres", "kafka", "schema-registry", "entity-cdc-setup", "entity-cdc"} - set(services)
if missing:
    sys.exit(f"docker/compose.yaml lacks services: {sorted(missing)}")
print(f"docker/compose.yaml: valid YAML, services {sorted(services)}")
PY

cargo test -p entity-cdc-integration --test docker

if [[ "${1:-}" == "--build" ]]; then
    # What the builder stage of docker/Dockerfile runs.
    cargo build --release --locked --bin entity-cdc
    echo "release binary: target/release/entity-cdc"
fi
