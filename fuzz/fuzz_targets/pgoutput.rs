//! Feeds arbitrary bytes to the pgoutput decoder: it must return, never panic, never abort
//! on an allocation sized by an untrusted count.
//!
//! The first byte picks the decoder's starting state (bit 0: inside a streamed block, so
//! the xid prefixes are read; bits 1-2: protocol version 1 to 3), the rest is split into
//! payloads at every 0xff 0xfe pair so that sequences of messages (stream start, changes,
//! stream stop) exercise the state tracking too.

#![no_main]

use entity_cdc::source::pgoutput::{Decoder, MAX_PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let version = u32::from((control >> 1) % 3) + 1;
    debug_assert!(version <= MAX_PROTOCOL_VERSION);
    let mut decoder = Decoder::new(version);
    decoder.set_in_stream(control & 1 == 1);
    let mut start = 0;
    let mut i = 0;
    while i + 1 < rest.len() {
        if rest[i] == 0xff && rest[i + 1] == 0xfe {
            let _ = decoder.decode(&rest[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    let _ = decoder.decode(&rest[start..]);
});
