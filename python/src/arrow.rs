//! Columns of records and their export through the Arrow C data interface (the structs of
//! <https://arrow.apache.org/docs/format/CDataInterface.html>, written out here: the
//! `arrow` crate would more than double the module's build for three structs).
//!
//! An exported array borrows the columns' buffers (an `Arc` keeps them alive until the
//! consumer releases it): pyarrow and polars read them where they are.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::Arc;

use firehose_consumer::{EventKind, FileEvent, GapInfo};

/// `struct ArrowSchema`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ArrowSchema {
    format: *const c_char,
    name: *const c_char,
    metadata: *const c_char,
    flags: i64,
    n_children: i64,
    children: *mut *mut ArrowSchema,
    dictionary: *mut ArrowSchema,
    release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    private_data: *mut c_void,
}

/// `struct ArrowArray`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ArrowArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut ArrowArray,
    dictionary: *mut ArrowArray,
    release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    private_data: *mut c_void,
}

/// `struct ArrowArrayStream`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ArrowArrayStream {
    get_schema: Option<unsafe extern "C" fn(*mut ArrowArrayStream, *mut ArrowSchema) -> c_int>,
    get_next: Option<unsafe extern "C" fn(*mut ArrowArrayStream, *mut ArrowArray) -> c_int>,
    get_last_error: Option<unsafe extern "C" fn(*mut ArrowArrayStream) -> *const c_char>,
    release: Option<unsafe extern "C" fn(*mut ArrowArrayStream)>,
    private_data: *mut c_void,
}

const NULLABLE: i64 = 2;

/// One column's values.
#[derive(Debug)]
enum Values {
    U64(Vec<u64>),
    U32(Vec<u32>),
    /// Bit-packed booleans.
    Bool(Vec<u8>),
    /// Large (64-bit offset) strings or binaries: paths of 4 KiB times a million rows do not
    /// fit 32-bit offsets.
    Bytes {
        offsets: Vec<i64>,
        data: Vec<u8>,
    },
}

/// One column: its name, Arrow format string, values and validity.
#[derive(Debug)]
struct Column {
    name: &'static CStr,
    format: &'static CStr,
    values: Values,
    /// Bit i set: row i is not null. None: no nulls.
    validity: Option<Vec<u8>>,
    nulls: i64,
}

/// A column being filled, one row at a time.
#[derive(Debug)]
struct Builder {
    col: Column,
    len: usize,
}

/// Sets bit `i` of a bitmap filled in order (bit 0, 1, 2, ...): it grows a byte at a time,
/// so it always holds exactly ceil(len / 8) bytes.
fn set_bit(bits: &mut Vec<u8>, i: usize, on: bool) {
    assert!(i / 8 <= bits.len(), "bitmap bits are set in order");
    if i / 8 == bits.len() {
        bits.push(0);
    }
    if on {
        bits[i / 8] |= 1 << (i % 8);
    }
}

impl Builder {
    fn new(name: &'static CStr, format: &'static CStr, values: Values) -> Self {
        Builder {
            col: Column {
                name,
                format,
                values,
                validity: Some(Vec::new()),
                nulls: 0,
            },
            len: 0,
        }
    }

    fn u64s(name: &'static CStr, format: &'static CStr) -> Self {
        Self::new(name, format, Values::U64(Vec::new()))
    }

    fn bytes(name: &'static CStr, format: &'static CStr) -> Self {
        Self::new(
            name,
            format,
            Values::Bytes {
                offsets: vec![0],
                data: Vec::new(),
            },
        )
    }

    fn valid(&mut self, on: bool) {
        let v = self.col.validity.as_mut().expect("building");
        set_bit(v, self.len, on);
        if !on {
            self.col.nulls += 1;
        }
        self.len += 1;
    }

    fn u64(&mut self, v: Option<u64>) {
        let Values::U64(vals) = &mut self.col.values else {
            unreachable!("{:?} is not a u64 column", self.col.name)
        };
        vals.push(v.unwrap_or(0));
        self.valid(v.is_some());
    }

    fn u32(&mut self, v: u32) {
        let Values::U32(vals) = &mut self.col.values else {
            unreachable!("{:?} is not a u32 column", self.col.name)
        };
        vals.push(v);
        self.valid(true);
    }

    fn bool(&mut self, v: bool) {
        let i = self.len;
        let Values::Bool(bits) = &mut self.col.values else {
            unreachable!("{:?} is not a bool column", self.col.name)
        };
        set_bit(bits, i, v);
        self.valid(true);
    }

    fn bytes_value(&mut self, v: Option<&[u8]>) {
        let Values::Bytes { offsets, data } = &mut self.col.values else {
            unreachable!("{:?} is not a bytes column", self.col.name)
        };
        data.extend_from_slice(v.unwrap_or_default());
        offsets.push(data.len() as i64);
        self.valid(v.is_some());
    }

    fn finish(mut self) -> Column {
        if self.col.nulls == 0 {
            self.col.validity = None;
        }
        self.col
    }
}

/// Record batches' columns, shared by every export of them.
#[derive(Debug)]
pub(crate) struct Columns {
    cols: Vec<Column>,
    len: usize,
}

/// One row, borrowed: what [`RowsBuilder::push`] takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub(crate) seq: u64,
    pub(crate) time_ns: u64,
    pub(crate) kind: EventKind,
    pub(crate) path: &'a [u8],
    pub(crate) path_to: Option<&'a [u8]>,
    pub(crate) size: Option<u64>,
    pub(crate) rule: u32,
    pub(crate) reconciled: bool,
    pub(crate) gap: Option<GapInfo>,
}

impl<'a> Row<'a> {
    pub(crate) fn of(e: &'a FileEvent) -> Self {
        Row {
            seq: e.seq,
            time_ns: e.time_ns,
            kind: e.kind,
            path: &e.path,
            path_to: e.path_to.as_deref(),
            size: e.size,
            rule: e.rule,
            reconciled: e.reconciled,
            gap: e.gap,
        }
    }
}

/// The columns of a batch, filled a row at a time:
/// `seq` uint64, `time` timestamp[ns, UTC], `kind` string, `path` string (bytes that are
/// not UTF-8 replaced by U+FFFD), `path_to` string or null, `size` uint64 or null,
/// `rule` uint32, `reconciled` bool, `gap_to` and `gap_reason` (a gap row's end and
/// reason, else null), and `path_bytes` / `path_to_bytes`: the exact bytes, set only
/// where the path is not UTF-8 (else null).
#[derive(Debug)]
pub(crate) struct RowsBuilder {
    b: [Builder; 12],
    len: usize,
}

const SEQ: usize = 0;
const TIME: usize = 1;
const KIND: usize = 2;
const PATH: usize = 3;
const PATH_TO: usize = 4;
const SIZE: usize = 5;
const RULE: usize = 6;
const RECONCILED: usize = 7;
const GAP_TO: usize = 8;
const GAP_REASON: usize = 9;
const PATH_BYTES: usize = 10;
const PATH_TO_BYTES: usize = 11;

impl RowsBuilder {
    pub(crate) fn new() -> Self {
        RowsBuilder {
            b: [
                Builder::u64s(c"seq", c"L"),
                Builder::u64s(c"time", c"tsn:UTC"),
                Builder::bytes(c"kind", c"U"),
                Builder::bytes(c"path", c"U"),
                Builder::bytes(c"path_to", c"U"),
                Builder::u64s(c"size", c"L"),
                Builder::new(c"rule", c"I", Values::U32(Vec::new())),
                Builder::new(c"reconciled", c"b", Values::Bool(Vec::new())),
                Builder::u64s(c"gap_to", c"L"),
                Builder::bytes(c"gap_reason", c"U"),
                Builder::bytes(c"path_bytes", c"Z"),
                Builder::bytes(c"path_to_bytes", c"Z"),
            ],
            len: 0,
        }
    }

    /// Adds one path to its string column and, if it is not UTF-8, to its bytes column.
    fn path(&mut self, text: usize, bytes: usize, p: Option<&[u8]>) {
        match p {
            Some(p) => {
                let lossy = String::from_utf8_lossy(p);
                self.b[text].bytes_value(Some(lossy.as_bytes()));
                let exact = matches!(lossy, std::borrow::Cow::Owned(_));
                self.b[bytes].bytes_value(exact.then_some(p));
            }
            None => {
                self.b[text].bytes_value(None);
                self.b[bytes].bytes_value(None);
            }
        }
    }

    pub(crate) fn push(&mut self, r: Row<'_>) {
        self.b[SEQ].u64(Some(r.seq));
        // Nanoseconds since the epoch fit an i64 until 2262.
        self.b[TIME].u64(Some(r.time_ns.min(i64::MAX as u64)));
        self.b[KIND].bytes_value(Some(r.kind.name().as_bytes()));
        self.path(PATH, PATH_BYTES, Some(r.path));
        self.path(PATH_TO, PATH_TO_BYTES, r.path_to);
        self.b[SIZE].u64(r.size);
        self.b[RULE].u32(r.rule);
        self.b[RECONCILED].bool(r.reconciled);
        self.b[GAP_TO].u64(r.gap.map(|g| g.to));
        self.b[GAP_REASON].bytes_value(r.gap.map(|g| g.reason.name().as_bytes()));
        self.len += 1;
    }

    pub(crate) fn finish(self) -> Columns {
        Columns {
            cols: self.b.into_iter().map(Builder::finish).collect(),
            len: self.len,
        }
    }
}

impl Columns {
    /// The columns of `rows` (see [`RowsBuilder`]).
    pub(crate) fn of(rows: &[FileEvent]) -> Columns {
        let mut b = RowsBuilder::new();
        for r in rows {
            b.push(Row::of(r));
        }
        b.finish()
    }

    /// Rows.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// What a schema node owns: its children (boxed, so their addresses stay put).
struct SchemaPrivate {
    children: Vec<*mut ArrowSchema>,
}

unsafe extern "C" fn release_schema(s: *mut ArrowSchema) {
    // SAFETY: the consumer calls release once, with a schema this module filled (its
    // `private_data` is a `Box<SchemaPrivate>` from `schema_node`), or one whose release is
    // already NULL, which is not called.
    let s = unsafe { &mut *s };
    if s.private_data.is_null() {
        s.release = None;
        return;
    }
    // SAFETY: made by `Box::into_raw` in `schema_node`, taken back once (release is set to
    // None below, and the spec forbids calling it twice).
    let private = unsafe { Box::from_raw(s.private_data.cast::<SchemaPrivate>()) };
    for child in private.children {
        // SAFETY: each child was made by `Box::into_raw` in `schema_node`; the consumer may
        // have moved it out (then its release is None), never freed its memory.
        let mut c = unsafe { Box::from_raw(child) };
        if let Some(r) = c.release {
            // SAFETY: a live child schema of ours, released once.
            unsafe { r(&mut *c) };
        }
    }
    s.private_data = ptr::null_mut();
    s.release = None;
}

fn schema_node(
    format: &'static CStr,
    name: &'static CStr,
    flags: i64,
    children: Vec<ArrowSchema>,
) -> ArrowSchema {
    let mut private = Box::new(SchemaPrivate {
        children: children
            .into_iter()
            .map(|c| Box::into_raw(Box::new(c)))
            .collect(),
    });
    let n = private.children.len() as i64;
    let children_ptr = private.children.as_mut_ptr();
    ArrowSchema {
        format: format.as_ptr(),
        name: name.as_ptr(),
        metadata: ptr::null(),
        flags,
        n_children: n,
        children: children_ptr,
        dictionary: ptr::null_mut(),
        release: Some(release_schema),
        private_data: Box::into_raw(private).cast(),
    }
}

/// The schema of [`Columns::of`]: a struct (a record batch) of its columns.
pub(crate) fn schema() -> ArrowSchema {
    let children = Columns::of(&[])
        .cols
        .iter()
        .map(|c| schema_node(c.format, c.name, NULLABLE, Vec::new()))
        .collect();
    schema_node(c"+s", c"", 0, children)
}

/// What an array node owns: the columns it points into, its buffer pointers and its
/// children (boxed).
struct ArrayPrivate {
    _columns: Arc<Columns>,
    buffers: Vec<*const c_void>,
    children: Vec<*mut ArrowArray>,
}

unsafe extern "C" fn release_array(a: *mut ArrowArray) {
    // SAFETY: as `release_schema`: called once, on an array of ours.
    let a = unsafe { &mut *a };
    if a.private_data.is_null() {
        a.release = None;
        return;
    }
    // SAFETY: made by `Box::into_raw` in `array_node`, taken back once.
    let private = unsafe { Box::from_raw(a.private_data.cast::<ArrayPrivate>()) };
    for child in &private.children {
        // SAFETY: made by `Box::into_raw` in `array_node`; moved out at most (release None).
        let mut c = unsafe { Box::from_raw(*child) };
        if let Some(r) = c.release {
            // SAFETY: a live child array of ours, released once.
            unsafe { r(&mut *c) };
        }
    }
    a.private_data = ptr::null_mut();
    a.release = None;
}

fn array_node(
    columns: &Arc<Columns>,
    length: usize,
    null_count: i64,
    buffers: Vec<*const c_void>,
    children: Vec<ArrowArray>,
) -> ArrowArray {
    let mut private = Box::new(ArrayPrivate {
        _columns: columns.clone(),
        buffers,
        children: children
            .into_iter()
            .map(|c| Box::into_raw(Box::new(c)))
            .collect(),
    });
    ArrowArray {
        length: length as i64,
        null_count,
        offset: 0,
        n_buffers: private.buffers.len() as i64,
        n_children: private.children.len() as i64,
        buffers: private.buffers.as_mut_ptr(),
        children: private.children.as_mut_ptr(),
        dictionary: ptr::null_mut(),
        release: Some(release_array),
        private_data: Box::into_raw(private).cast(),
    }
}

/// `columns` as one struct array (a record batch), borrowing their buffers.
pub(crate) fn array(columns: &Arc<Columns>) -> ArrowArray {
    let children = columns
        .cols
        .iter()
        .map(|c| {
            let validity = c
                .validity
                .as_ref()
                .map_or(ptr::null(), |v| v.as_ptr().cast::<c_void>());
            let buffers = match &c.values {
                Values::U64(v) => vec![validity, v.as_ptr().cast()],
                Values::U32(v) => vec![validity, v.as_ptr().cast()],
                Values::Bool(v) => vec![validity, v.as_ptr().cast()],
                Values::Bytes { offsets, data } => {
                    vec![validity, offsets.as_ptr().cast(), data.as_ptr().cast()]
                }
            };
            array_node(columns, columns.len, c.nulls, buffers, Vec::new())
        })
        .collect();
    array_node(columns, columns.len, 0, vec![ptr::null()], children)
}

/// A stream's state: the one batch it still has to give.
struct StreamPrivate {
    batch: Option<Arc<Columns>>,
}

unsafe extern "C" fn stream_schema(s: *mut ArrowArrayStream, out: *mut ArrowSchema) -> c_int {
    // SAFETY: `out` points to a schema the consumer gives to be filled (the spec).
    unsafe { out.write(schema()) };
    let _ = s;
    0
}

unsafe extern "C" fn stream_next(s: *mut ArrowArrayStream, out: *mut ArrowArray) -> c_int {
    // SAFETY: a stream of ours, not released (the spec: no calls after release).
    let data = unsafe { (*s).private_data };
    // SAFETY: its private data is the `Box<StreamPrivate>` made in `stream`, alive until
    // release, and the consumer calls one stream callback at a time.
    let private = unsafe { &mut *data.cast::<StreamPrivate>() };
    let next = match private.batch.take() {
        Some(cols) => array(&cols),
        // The end: a released array.
        None => ArrowArray {
            length: 0,
            null_count: 0,
            offset: 0,
            n_buffers: 0,
            n_children: 0,
            buffers: ptr::null_mut(),
            children: ptr::null_mut(),
            dictionary: ptr::null_mut(),
            release: None,
            private_data: ptr::null_mut(),
        },
    };
    // SAFETY: `out` points to an array the consumer gives to be filled (the spec).
    unsafe { out.write(next) };
    0
}

unsafe extern "C" fn stream_error(_s: *mut ArrowArrayStream) -> *const c_char {
    ptr::null()
}

unsafe extern "C" fn stream_release(s: *mut ArrowArrayStream) {
    // SAFETY: a stream of ours, released once.
    let s = unsafe { &mut *s };
    if !s.private_data.is_null() {
        // SAFETY: made by `Box::into_raw` in `stream`, taken back once.
        drop(unsafe { Box::from_raw(s.private_data.cast::<StreamPrivate>()) });
    }
    s.private_data = ptr::null_mut();
    s.release = None;
}

/// A stream of one batch: `columns`.
pub(crate) fn stream(columns: &Arc<Columns>) -> ArrowArrayStream {
    ArrowArrayStream {
        get_schema: Some(stream_schema),
        get_next: Some(stream_next),
        get_last_error: Some(stream_error),
        release: Some(stream_release),
        private_data: Box::into_raw(Box::new(StreamPrivate {
            batch: Some(columns.clone()),
        }))
        .cast(),
    }
}

/// Releases `p` unless its release is NULL (moved out or released already).
///
/// # Safety
/// `p` points to a live schema.
pub(crate) unsafe fn release_schema_if_live(p: *mut ArrowSchema) {
    // SAFETY: `p` is live (the caller's contract).
    if let Some(r) = unsafe { (*p).release } {
        // SAFETY: a live schema with a release callback, released once (it sets it to None).
        unsafe { r(p) };
    }
}

/// Releases `p` unless its release is NULL.
///
/// # Safety
/// `p` points to a live array.
pub(crate) unsafe fn release_array_if_live(p: *mut ArrowArray) {
    // SAFETY: as above.
    if let Some(r) = unsafe { (*p).release } {
        // SAFETY: as above.
        unsafe { r(p) };
    }
}

/// Releases `p` unless its release is NULL.
///
/// # Safety
/// `p` points to a live stream.
pub(crate) unsafe fn release_stream_if_live(p: *mut ArrowArrayStream) {
    // SAFETY: as above.
    if let Some(r) = unsafe { (*p).release } {
        // SAFETY: as above.
        unsafe { r(p) };
    }
}
