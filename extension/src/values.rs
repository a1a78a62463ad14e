//! Column values: how each type is encoded, decided once per column, and the per-value encoder.
//!
//! Native encodings avoid PostgreSQL's text output functions (the main cost of pgoutput): integers,
//! floats, booleans, date/time types and uuids are written as MessagePack numbers and bytes, text and
//! bytea are copied as they are. numeric goes through `numeric_out` (exact) and is packed four bits per
//! character; everything without a native encoding uses its type's output function, as text.

use crate::text::{to_utf8, DbEncoding};
use fig_format::encode::Writer;
use fig_format::ValueKind;
use pgrx::pg_sys;
use pgrx::varlena::{varatt_is_1b_e, vardata_any, varsize_any_exhdr, vartag_external};

/// How to encode one type (a column's, or an array's element type).
pub struct TypeEncoder {
    pub kind: ValueKind,
    /// Source of `Text` values: a `name` is a fixed-size C string, not a varlena.
    is_name: bool,
    /// A `money` value, sent as the exact decimal `money::numeric` gives.
    money: bool,
    /// Output function, for kinds encoded through their text form.
    out_fn: Option<Box<pg_sys::FmgrInfo>>,
    /// For arrays: the element encoder and storage layout.
    elem: Option<Box<ElemLayout>>,
    /// Reused text buffer (numeric digits).
    scratch: Vec<u8>,
}

struct ElemLayout {
    type_oid: pg_sys::Oid,
    len: i16,
    byval: bool,
    align: std::ffi::c_char,
    enc: TypeEncoder,
}

impl TypeEncoder {
    /// Chooses the encoding for a type (domains resolve to their base type). `mcxt` must outlive the
    /// encoder: output function caches live there.
    ///
    /// # Safety
    /// Must run inside a PostgreSQL backend with catalog access (a transaction, as in a decoding
    /// callback), and `mcxt` must be a valid memory context.
    pub unsafe fn for_type(type_oid: pg_sys::Oid, mcxt: pg_sys::MemoryContext) -> TypeEncoder {
        // SAFETY: a syscache lookup by OID, valid inside a transaction (the caller's contract); an
        // unknown type is an ERROR, not undefined behaviour.
        let base = unsafe { pg_sys::getBaseType(type_oid) };
        let plain = |kind| TypeEncoder {
            kind,
            is_name: false,
            money: false,
            out_fn: None,
            elem: None,
            scratch: Vec::new(),
        };
        match base {
            pg_sys::BOOLOID => plain(ValueKind::Bool),
            pg_sys::INT2OID => plain(ValueKind::Int2),
            pg_sys::INT4OID => plain(ValueKind::Int4),
            pg_sys::INT8OID => plain(ValueKind::Int8),
            pg_sys::FLOAT4OID => plain(ValueKind::Float4),
            pg_sys::FLOAT8OID => plain(ValueKind::Float8),
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => plain(ValueKind::Text),
            pg_sys::NAMEOID => TypeEncoder {
                is_name: true,
                ..plain(ValueKind::Text)
            },
            pg_sys::BYTEAOID => plain(ValueKind::Bytea),
            pg_sys::DATEOID => plain(ValueKind::Date),
            pg_sys::TIMEOID => plain(ValueKind::Time),
            pg_sys::TIMESTAMPOID => plain(ValueKind::Timestamp),
            pg_sys::TIMESTAMPTZOID => plain(ValueKind::Timestamptz),
            pg_sys::UUIDOID => plain(ValueKind::Uuid),
            pg_sys::JSONOID => plain(ValueKind::Json),
            // SAFETY: this function's own contract, passed on to via_output.
            pg_sys::NUMERICOID => unsafe { Self::via_output(ValueKind::Numeric, base, mcxt) },
            // money's text output is locale text ("$1,234.56"); `money::numeric` is exact.
            pg_sys::MONEYOID => TypeEncoder {
                money: true,
                // SAFETY: as above.
                ..unsafe { Self::via_output(ValueKind::Numeric, pg_sys::NUMERICOID, mcxt) }
            },
            // SAFETY: as above.
            pg_sys::JSONBOID => unsafe { Self::via_output(ValueKind::Jsonb, base, mcxt) },
            _ => {
                let mut len = 0i16;
                let mut byval = false;
                let mut align: std::ffi::c_char = 0;
                // SAFETY: syscache lookups inside a transaction (this function's contract); the
                // out-parameters are live locals.
                let elem_type = unsafe {
                    pg_sys::get_typlenbyvalalign(base, &mut len, &mut byval, &mut align);
                    pg_sys::get_element_type(base)
                };
                if elem_type != pg_sys::InvalidOid && len == -1 {
                    let mut elen = 0i16;
                    let mut ebyval = false;
                    let mut ealign: std::ffi::c_char = 0;
                    // SAFETY: as above; the element encoder is built under the same contract.
                    let enc = unsafe {
                        pg_sys::get_typlenbyvalalign(
                            elem_type,
                            &mut elen,
                            &mut ebyval,
                            &mut ealign,
                        );
                        TypeEncoder::for_type(elem_type, mcxt)
                    };
                    // A column's element kind is never Array: PostgreSQL arrays are flat with dims.
                    TypeEncoder {
                        elem: Some(Box::new(ElemLayout {
                            type_oid: elem_type,
                            len: elen,
                            byval: ebyval,
                            align: ealign,
                            enc,
                        })),
                        ..plain(ValueKind::Array)
                    }
                } else {
                    // SAFETY: a syscache lookup, then via_output, under this function's contract.
                    unsafe {
                        if pg_sys::get_typtype(base) == pg_sys::TYPTYPE_ENUM as std::ffi::c_char {
                            Self::via_output(ValueKind::Enum, base, mcxt)
                        } else {
                            Self::via_output(ValueKind::Other, base, mcxt)
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// As [`TypeEncoder::for_type`].
    unsafe fn via_output(
        kind: ValueKind,
        type_oid: pg_sys::Oid,
        mcxt: pg_sys::MemoryContext,
    ) -> TypeEncoder {
        let mut foid = pg_sys::InvalidOid;
        let mut varlena = false;
        // SAFETY: FmgrInfo is a plain C struct (OIDs, integers, bools, nullable pointers and an
        // Option of a function pointer) for which all zero bytes is a valid value: the state
        // fmgr_info_cxt expects to overwrite.
        let mut finfo: Box<pg_sys::FmgrInfo> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a syscache lookup inside a transaction (the caller's contract), then
        // fmgr_info_cxt filling the boxed FmgrInfo, whose address stays put for the encoder's
        // life; whatever the function caches later (fn_extra) is allocated in `mcxt`, which the
        // caller keeps alive as long as the encoder.
        unsafe {
            pg_sys::getTypeOutputInfo(type_oid, &mut foid, &mut varlena);
            pg_sys::fmgr_info_cxt(foid, finfo.as_mut(), mcxt);
        }
        TypeEncoder {
            kind,
            is_name: false,
            money: false,
            out_fn: Some(finfo),
            elem: None,
            scratch: Vec::new(),
        }
    }

    pub fn elem_kind(&self) -> ValueKind {
        self.elem.as_ref().map_or(ValueKind::Other, |e| e.enc.kind)
    }

    /// Encodes one non-null value. The caller has already handled NULL and unchanged TOAST.
    ///
    /// Anything it allocates (detoasted copies, output text) lives in the current memory context,
    /// which the caller resets after the change.
    ///
    /// # Safety
    /// `d` must be a valid, non-null datum of the type this encoder was made for, and inside a
    /// transaction (output functions may look up the catalog).
    pub unsafe fn encode(
        &mut self,
        w: &mut Writer<'_>,
        d: pg_sys::Datum,
        db: DbEncoding,
    ) -> Result<(), ValueError> {
        match self.kind {
            ValueKind::Bool => w.bool(d.value() != 0),
            ValueKind::Int2 => w.int(d.value() as i16 as i64),
            ValueKind::Int4 => w.int(d.value() as i32 as i64),
            ValueKind::Int8 => w.int(d.value() as i64),
            ValueKind::Float4 => w.f32(f32::from_bits(d.value() as u32)),
            ValueKind::Float8 => w.f64(f64::from_bits(d.value() as u64)),
            ValueKind::Date => w.int(d.value() as i32 as i64),
            ValueKind::Time | ValueKind::Timestamp | ValueKind::Timestamptz => {
                w.int(d.value() as i64)
            }
            ValueKind::Uuid => {
                // SAFETY: uuid is a by-reference type of exactly 16 bytes (pg_uuid_t); `d` points
                // at one inside the tuple being decoded, alive for this call.
                let bytes = unsafe { std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16) };
                w.bin(bytes)
            }
            // SAFETY: bytea is a varlena; `d` is one (the caller's contract).
            ValueKind::Bytea => w.bin(unsafe { varlena_bytes(d) }),
            ValueKind::Text | ValueKind::Json => {
                let raw = if self.is_name {
                    // SAFETY: a `name` datum points at a NameData in the tuple: a fixed
                    // NAMEDATALEN-byte buffer that always holds a NUL terminator.
                    unsafe { std::ffi::CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>()) }
                        .to_bytes()
                } else {
                    // SAFETY: text, varchar, bpchar and json are varlenas (the caller's contract).
                    unsafe { varlena_bytes(d) }
                };
                w.str_bytes(&to_utf8(raw, db)?);
            }
            ValueKind::Numeric => {
                let d = match self.money {
                    // SAFETY: `d` is a money datum (by value, an int8), which cash_numeric
                    // takes as its one argument; it returns a numeric palloc'd in the current
                    // context (an ERROR on failure, raised through pgrx's guard).
                    true => unsafe {
                        pg_sys::DirectFunctionCall1Coll(Some(cash_numeric), pg_sys::InvalidOid, d)
                    },
                    false => d,
                };
                // Straight from the stored digits; numeric_out only for what that cannot read.
                let mut text = std::mem::take(&mut self.scratch);
                text.clear();
                // SAFETY: numeric is a varlena; `d` is a numeric datum, stored or just made.
                let body = unsafe { varlena_bytes(d) };
                let result = match crate::numeric::append_text(body, &mut text) {
                    Some(()) => w.decimal_text(&text),
                    // SAFETY: `d` is a numeric and this encoder's output function numeric_out.
                    None => w.decimal_text(unsafe { self.output_text(d) }),
                };
                self.scratch = text;
                result.map_err(|e| ValueError::Numeric(e.to_string()))?;
            }
            ValueKind::Jsonb | ValueKind::Enum | ValueKind::Other => {
                // SAFETY: `d` is a datum of the type whose output function this encoder holds.
                let text = unsafe { self.output_text(d) };
                w.str_bytes(&to_utf8(text, db)?);
            }
            // SAFETY: `d` is an array datum of the type this encoder was made for.
            ValueKind::Array => unsafe { self.encode_array(w, d, db)? },
        }
        Ok(())
    }

    /// The type's text output. The bytes live in the current memory context: use them before
    /// it is reset (the caller's per-change reset), whatever lifetime the borrow checker allows.
    ///
    /// # Safety
    /// `d` must be a non-null datum of the type whose output function this encoder holds.
    unsafe fn output_text<'a>(&mut self, d: pg_sys::Datum) -> &'a [u8] {
        let Some(f) = self.out_fn.as_mut() else {
            // for_type gives every text-output kind a function; reaching here is a plugin bug.
            pgrx::error!("figoutput: no output function for a {:?} value", self.kind)
        };
        // SAFETY: `f` was filled by fmgr_info_cxt for this type's output function and `d` is a
        // datum of that type (the caller's contract). The result is a NUL-terminated string
        // palloc'd in the current memory context, which outlives this call.
        unsafe {
            let cstr = pg_sys::OutputFunctionCall(f.as_mut(), d);
            std::ffi::CStr::from_ptr(cstr).to_bytes()
        }
    }

    /// # Safety
    /// `d` must be a non-null array datum of the type this encoder was made for.
    unsafe fn encode_array(
        &mut self,
        w: &mut Writer<'_>,
        d: pg_sys::Datum,
        db: DbEncoding,
    ) -> Result<(), ValueError> {
        let Some(elem) = self.elem.as_mut() else {
            pgrx::error!("figoutput: array encoder without element layout")
        };
        // SAFETY: `d` is an array varlena (the caller's contract). pg_detoast_datum returns it,
        // or its detoasted copy palloc'd in the current context: either way a complete ArrayType
        // in memory, alive until the per-change reset, whose header can be read.
        let (arr, ndim) = unsafe {
            let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
            (arr, (*arr).ndim)
        };
        if !(0..=6).contains(&ndim) {
            return Err(ValueError::Array(format!("{ndim} dimensions")));
        }
        let ndim = ndim as usize;
        // SAFETY: ARR_DIMS and ARR_LBOUND (utils/array.h): `ndim` ints each, right after the fixed
        // header, inside the array checked above.
        let (dims, lbounds) = unsafe {
            let dims_ptr =
                (arr as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
            (
                std::slice::from_raw_parts(dims_ptr, ndim),
                std::slice::from_raw_parts(dims_ptr.add(ndim), ndim),
            )
        };
        let mut values: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n: std::ffi::c_int = 0;
        // SAFETY: `arr` is a complete array of `elem.type_oid` (the column's element type, with
        // the layout looked up for it); the out-parameters are live locals. deconstruct_array
        // pallocs `n` datums and `n` null flags in the current context (non-null, since a nulls
        // pointer is asked for); by-reference elements point into `arr`.
        unsafe {
            pg_sys::deconstruct_array(
                arr,
                elem.type_oid,
                elem.len as i32,
                elem.byval,
                elem.align,
                &mut values,
                &mut nulls,
                &mut n,
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        // SAFETY: the two arrays deconstruct_array just filled with `n` entries each; they and
        // the elements they point at live until the per-change reset, after this function.
        let (values, nulls) = unsafe {
            (
                std::slice::from_raw_parts(values, n),
                std::slice::from_raw_parts(nulls, n),
            )
        };
        let pairs: Vec<(i32, i32)> = lbounds.iter().copied().zip(dims.iter().copied()).collect();
        w.array_value_header(&pairs, n as u32);
        for (&value, &null) in values.iter().zip(nulls) {
            if null {
                w.nil();
            } else {
                // SAFETY: a non-null element of the array, of the element type `elem.enc` was
                // made for.
                unsafe { elem.enc.encode(w, value, db)? };
            }
        }
        Ok(())
    }
}

extern "C-unwind" {
    /// PostgreSQL's `money::numeric` cast (`cash_numeric` in utils/adt/cash.c), called through
    /// `DirectFunctionCall1Coll`, which needs the C function itself.
    fn cash_numeric(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// True for a TOASTed value stored out of line that the WAL record does not carry: an UPDATE that
/// left it unchanged. The receiver fills it from its last known value.
///
/// # Safety
/// `d` must be a non-null varlena datum.
pub unsafe fn is_unchanged_toast(d: pg_sys::Datum) -> bool {
    let p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: `p` points at a varlena (the caller's contract), whose first header byte can always
    // be read; the tag byte after it exists whenever that first byte says "1-byte external".
    unsafe {
        varatt_is_1b_e(p) && vartag_external(p) == pg_sys::vartag_external::VARTAG_ONDISK as u8
    }
}

/// The bytes of a (possibly compressed or short-header) varlena, detoasted into the current context.
/// They live as long as the datum's storage or the current memory context, whichever holds them:
/// use them before the per-change reset, whatever lifetime the borrow checker allows.
///
/// # Safety
/// `d` must be a non-null varlena datum.
unsafe fn varlena_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: `d` is a varlena (the caller's contract). pg_detoast_datum_packed returns it as is,
    // or an uncompressed, in-line copy palloc'd in the current context; its header gives the
    // length of the data that follows it.
    unsafe {
        let p = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        std::slice::from_raw_parts(vardata_any(p) as *const u8, varsize_any_exhdr(p))
    }
}

#[derive(Debug)]
pub enum ValueError {
    Encoding(String),
    Numeric(String),
    Array(String),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::Encoding(m) => write!(f, "{m}"),
            ValueError::Numeric(m) => write!(f, "numeric value: {m}"),
            ValueError::Array(m) => write!(f, "array value has {m}; at most 6 are supported"),
        }
    }
}
