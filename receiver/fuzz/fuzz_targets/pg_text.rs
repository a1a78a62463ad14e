//! PostgreSQL text values: every scalar parser and the array parser, on any UTF-8 or non-UTF-8 text.
#![no_main]

use fig_receiver::decode::pg_text;
use fig_receiver::decode::types::{ScalarKind, TextFormat};
use libfuzzer_sys::fuzz_target;

const KINDS: [ScalarKind; 17] = [
    ScalarKind::Bool,
    ScalarKind::Int2,
    ScalarKind::Int4,
    ScalarKind::Int8,
    ScalarKind::Float4,
    ScalarKind::Float8,
    ScalarKind::Numeric,
    ScalarKind::Text,
    ScalarKind::Bytea,
    ScalarKind::Date,
    ScalarKind::Time,
    ScalarKind::Timestamp,
    ScalarKind::Timestamptz,
    ScalarKind::Uuid,
    ScalarKind::Json,
    ScalarKind::Enum,
    ScalarKind::Other,
];

fuzz_target!(|data: &[u8]| {
    let Some((&k, text)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let _ = pg_text::parse(TextFormat::Scalar(kind), text);
    let delimiter = if k & 0x80 != 0 { b';' } else { b',' };
    let _ = pg_text::parse(
        TextFormat::Array {
            element: kind,
            delimiter,
        },
        text,
    );
});
