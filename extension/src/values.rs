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
    /// Must run inside a PostgreSQL backend with catalog access.
    pub unsafe fn for_type(type_oid: pg_sys::Oid, mcxt: pg_sys::MemoryContext) -> TypeEncoder {
        let base = pg_sys::getBaseType(type_oid);
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
            pg_sys::NUMERICOID => Self::via_output(ValueKind::Numeric, base, mcxt),
            // money's text output is locale text ("$1,234.56"); `money::numeric` is exact.
            pg_sys::MONEYOID => TypeEncoder {
                money: true,
                ..Self::via_output(ValueKind::Numeric, pg_sys::NUMERICOID, mcxt)
            },
            pg_sys::JSONBOID => Self::via_output(ValueKind::Jsonb, base, mcxt),
            _ => {
                let elem_type = pg_sys::get_element_type(base);
                let mut len = 0i16;
                let mut byval = false;
                let mut align: std::ffi::c_char = 0;
                pg_sys::get_typlenbyvalalign(base, &mut len, &mut byval, &mut align);
                if elem_type != pg_sys::InvalidOid && len == -1 {
                    let mut elen = 0i16;
                    let mut ebyval = false;
                    let mut ealign: std::ffi::c_char = 0;
                    pg_sys::get_typlenbyvalalign(elem_type, &mut elen, &mut ebyval, &mut ealign);
                    let enc = TypeEncoder::for_type(elem_type, mcxt);
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
                } else if pg_sys::get_typtype(base) == pg_sys::TYPTYPE_ENUM as std::ffi::c_char {
                    Self::via_output(ValueKind::Enum, base, mcxt)
                } else {
                    Self::via_output(ValueKind::Other, base, mcxt)
                }
            }
        }
    }

    unsafe fn via_output(
        kind: ValueKind,
        type_oid: pg_sys::Oid,
        mcxt: pg_sys::MemoryContext,
    ) -> TypeEncoder {
        let mut foid = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(type_oid, &mut foid, &mut varlena);
        let mut finfo: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
        pg_sys::fmgr_info_cxt(foid, finfo.as_mut(), mcxt);
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
    /// # Safety
    /// `d` must be a valid datum of the type this encoder was made for.
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
            ValueKind::Uuid => w.bin(std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16)),
            ValueKind::Bytea => w.bin(varlena_bytes(d)),
            ValueKind::Text | ValueKind::Json => {
                let raw = if self.is_name {
                    std::ffi::CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>()).to_bytes()
                } else {
                    varlena_bytes(d)
                };
                w.str_bytes(&to_utf8(raw, db)?);
            }
            ValueKind::Numeric => {
                let d = match self.money {
                    true => {
                        pg_sys::DirectFunctionCall1Coll(Some(cash_numeric), pg_sys::InvalidOid, d)
                    }
                    false => d,
                };
                // Straight from the stored digits; numeric_out only for what that cannot read.
                let mut text = std::mem::take(&mut self.scratch);
                text.clear();
                let body = varlena_bytes(d);
                let result = match crate::numeric::append_text(body, &mut text) {
                    Some(()) => w.decimal_text(&text),
                    None => w.decimal_text(self.output_text(d)),
                };
                self.scratch = text;
                result.map_err(|e| ValueError::Numeric(e.to_string()))?;
            }
            ValueKind::Jsonb | ValueKind::Enum | ValueKind::Other => {
                let text = self.output_text(d);
                w.str_bytes(&to_utf8(text, db)?);
            }
            ValueKind::Array => self.encode_array(w, d, db)?,
        }
        Ok(())
    }

    unsafe fn output_text<'a>(&mut self, d: pg_sys::Datum) -> &'a [u8] {
        let Some(f) = self.out_fn.as_mut() else {
            // for_type gives every text-output kind a function; reaching here is a plugin bug.
            pgrx::error!("figoutput: no output function for a {:?} value", self.kind)
        };
        let cstr = pg_sys::OutputFunctionCall(f.as_mut(), d);
        std::ffi::CStr::from_ptr(cstr).to_bytes()
    }

    unsafe fn encode_array(
        &mut self,
        w: &mut Writer<'_>,
        d: pg_sys::Datum,
        db: DbEncoding,
    ) -> Result<(), ValueError> {
        let Some(elem) = self.elem.as_mut() else {
            pgrx::error!("figoutput: array encoder without element layout")
        };
        let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let ndim = (*arr).ndim;
        if !(0..=6).contains(&ndim) {
            return Err(ValueError::Array(format!("{ndim} dimensions")));
        }
        // ARR_DIMS and ARR_LBOUND: two int arrays right after the fixed header.
        let dims_ptr =
            (arr as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
        let dims = std::slice::from_raw_parts(dims_ptr, ndim as usize);
        let lbounds = std::slice::from_raw_parts(dims_ptr.add(ndim as usize), ndim as usize);
        let mut values: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n: std::ffi::c_int = 0;
        pg_sys::deconstruct_array(
            arr,
            elem.type_oid,
            elem.len as i32,
            elem.byval,
            elem.align,
            &mut values,
            &mut nulls,
            &mut n,
        );
        let pairs: Vec<(i32, i32)> = lbounds.iter().copied().zip(dims.iter().copied()).collect();
        w.array_value_header(&pairs, n as u32);
        for i in 0..n as usize {
            if *nulls.add(i) {
                w.nil();
            } else {
                elem.enc.encode(w, *values.add(i), db)?;
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
    varatt_is_1b_e(p) && vartag_external(p) == pg_sys::vartag_external::VARTAG_ONDISK as u8
}

/// The bytes of a (possibly compressed or short-header) varlena, detoasted into the current context.
unsafe fn varlena_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    let p = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
    std::slice::from_raw_parts(vardata_any(p) as *const u8, varsize_any_exhdr(p))
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
