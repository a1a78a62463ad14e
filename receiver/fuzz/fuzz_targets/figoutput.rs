//! figoutput writes: any bytes, decoded in a session that already knows one relation of every
//! value kind, must give events or a DecodeError, never a panic or a huge allocation.
#![no_main]

use fig_receiver::decode::{figoutput, FigState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut state = FigState::new();
    // The input may start with RELATION records of its own; split it so the second half runs in
    // the state the first half left behind.
    let mid = data.len() / 2;
    let _ = figoutput::decode(&data[..mid], &mut state);
    let _ = figoutput::decode(&data[mid..], &mut state);
});
