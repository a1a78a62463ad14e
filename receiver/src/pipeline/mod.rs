//! The pipeline between the decoders and the sink: transaction assembly (whole committed
//! transactions only, bounded memory), TOAST fill, ordering, and the acknowledgement watermark.

pub mod assemble;
pub mod batch;
pub mod ddl;
pub mod partitions;
