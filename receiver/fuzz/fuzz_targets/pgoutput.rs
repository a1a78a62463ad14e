//! pgoutput messages: the first byte picks the protocol version and whether a stream block is open,
//! the rest is a sequence of length-prefixed messages decoded in one session.
#![no_main]

use fig_receiver::decode::{pgoutput, PgState, TypeRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let version = u32::from(mode % 4) + 1;
    let Ok(mut state) = PgState::new(version) else {
        return;
    };
    let types = TypeRegistry::builtin();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (msg, next) = tail.split_at(len);
        let _ = pgoutput::decode(msg, &mut state, &types);
        rest = next;
    }
});
