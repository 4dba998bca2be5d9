//! The `entity-cdc` binary.

fn main() {}
