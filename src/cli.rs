//! The command line: `run`, `setup`, `check`, `tail`.
