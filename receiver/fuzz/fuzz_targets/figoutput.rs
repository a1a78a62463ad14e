//! figoutput writes: any bytes must give events or a DecodeError, never a panic or a huge
//! allocation. The input is decoded as two writes of one session, so RELATION records of the first
//! half describe the relations the changes of the second half use.
#![no_main]

use fig_receiver::decode::{figoutput, FigState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut state = FigState::new();
    let mid = data.len() / 2;
    let _ = figoutput::decode(&data[..mid], &mut state);
    let _ = figoutput::decode(&data[mid..], &mut state);
});
