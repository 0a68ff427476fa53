//! A small, safe reader for Python pickles that hold plain data only — enough for the RefCOCO family's
//! `refs(unc).p` / `refs(umd).p` files (a list of dicts written by Python 2's `cPickle`).
//!
//! # What is supported
//!
//! A stack machine for every opcode of protocols 0–4 that builds *data*:
//!
//! | kind | opcodes |
//! |---|---|
//! | framing | `PROTO` (≤ 5), `FRAME`, `STOP` |
//! | stack | `MARK`, `POP`, `POP_MARK`, `DUP` |
//! | constants | `NONE`, `NEWTRUE`, `NEWFALSE` |
//! | integers | `INT` (text; `I01`/`I00` are the protocol-0 booleans), `BININT`, `BININT1`, `BININT2`, `LONG` (text), `LONG1`, `LONG4` |
//! | floats | `FLOAT` (text), `BINFLOAT` |
//! | Python 2 `str` (bytes) | `STRING` (quoted repr), `BINSTRING`, `SHORT_BINSTRING` |
//! | text | `UNICODE` (raw-unicode-escape), `BINUNICODE`, `SHORT_BINUNICODE`, `BINUNICODE8` |
//! | Python 3 `bytes` | `BINBYTES`, `SHORT_BINBYTES`, `BINBYTES8` |
//! | containers | `EMPTY_LIST`, `LIST`, `APPEND`, `APPENDS`, `EMPTY_DICT`, `DICT`, `SETITEM`, `SETITEMS`, `EMPTY_TUPLE`, `TUPLE`, `TUPLE1`, `TUPLE2`, `TUPLE3` |
//! | memo | `PUT`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE`, `GET`, `BINGET`, `LONG_BINGET` |
//!
//! `cPickle.dumps(refs, 2)` under Python 2.7 uses `PROTO`, `EMPTY_LIST`, `EMPTY_DICT`, `MARK`, `APPEND(S)`,
//! `SETITEM(S)`, `SHORT_BINSTRING`/`BINSTRING` (every `str`), `BINUNICODE` (every `unicode`), `BININT1`/
//! `BININT2`/`BININT` (ints that fit 32 bits), `INT` (64-bit `int`s beyond 32 bits: the text form, even at
//! protocol 2), `LONG1` (`long`), `BINFLOAT`, `NONE`, `NEWTRUE`/`NEWFALSE`, `TUPLE*`, `BINPUT`/`LONG_BINPUT`
//! and `BINGET`/`LONG_BINGET` (repeated — e.g. interned — objects), `STOP`.
//!
//! Everything that would construct or call arbitrary objects (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`,
//! `BUILD`, `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, `EXT*`, persistent ids, sets, out-of-band buffers) is
//! refused with an error naming the opcode and its byte offset; so is any unknown byte, truncated input,
//! and a stream that ends without `STOP`. As with `pickle.load`, the result is the top of the stack at
//! `STOP`; values left below it and bytes after `STOP` are ignored. There is no `unsafe` code and nothing
//! is allocated beyond what the input really contains (lengths are checked against the remaining input).
//!
//! # Strings
//!
//! Python 2 `str` objects are byte strings and come out as [`PickleValue::Bytes`]; `unicode` objects (and
//! Python 3 `str`) come out as [`PickleValue::Str`]. [`decode_text`] turns bytes into text: **UTF-8 if the
//! bytes are valid UTF-8, otherwise Latin-1** (each byte is the code point U+0000–U+00FF, which cannot
//! fail — the same text as Python 3's `pickle.load(f, encoding="latin1")` gives for non-UTF-8 strings).
//! Note that mmengine's `load(..., file_format='pkl')`, which mmdet's `RefCocoDataset` uses, calls
//! `pickle.load` with its default `encoding="ASCII"` and would raise on any non-ASCII byte string.
//!
//! `BINUNICODE` payloads that are not valid UTF-8 (a Python 2 narrow build can write lone surrogates) are
//! decoded lossily, with U+FFFD for each invalid sequence.
//!
//! Shared objects (memo `GET`s) are copied into the tree; a structure that contains itself is an error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A plain-data Python object read from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// `int` / `long` that fits in an `i64`.
    Int(i64),
    /// `float`.
    Float(f64),
    /// A byte string: Python 2 `str`, Python 3 `bytes`. See [`decode_text`].
    Bytes(Vec<u8>),
    /// Text: Python 2 `unicode`, Python 3 `str`.
    Str(String),
    /// `list`.
    List(Vec<PickleValue>),
    /// `tuple`.
    Tuple(Vec<PickleValue>),
    /// `dict`, in the order of the pickle stream (Python 2 writes dicts in hash order).
    Dict(Vec<(PickleValue, PickleValue)>),
}

/// Decodes a Python 2 byte string to text: UTF-8 when valid, otherwise Latin-1 (never fails).
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
    }
}

impl PickleValue {
    /// The text of a [`Bytes`](PickleValue::Bytes) (via [`decode_text`]) or [`Str`](PickleValue::Str) value.
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            PickleValue::Bytes(b) => Some(decode_text(b)),
            PickleValue::Str(s) => Some(Cow::Borrowed(s.as_str())),
            _ => None,
        }
    }

    /// The integer of an [`Int`](PickleValue::Int) (booleans are not integers here).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            PickleValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_seq(&self) -> Option<&[PickleValue]> {
        match self {
            PickleValue::List(v) | PickleValue::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The entries of a dict.
    pub fn as_dict(&self) -> Option<&[(PickleValue, PickleValue)]> {
        match self {
            PickleValue::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks up a text key (stored as either a byte string or text) in a dict; `None` for non-dicts.
    /// With duplicate keys the last one wins, as when Python builds the dict.
    pub fn get(&self, key: &str) -> Option<&PickleValue> {
        self.as_dict()?.iter().rev().find(|(k, _)| k.as_text().is_some_and(|t| t == key)).map(|(_, v)| v)
    }

    /// A short name of the value's Python type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PickleValue::None => "None",
            PickleValue::Bool(_) => "bool",
            PickleValue::Int(_) => "int",
            PickleValue::Float(_) => "float",
            PickleValue::Bytes(_) => "str (bytes)",
            PickleValue::Str(_) => "unicode",
            PickleValue::List(_) => "list",
            PickleValue::Tuple(_) => "tuple",
            PickleValue::Dict(_) => "dict",
        }
    }
}

/// Why a pickle could not be read. Every variant has the byte offset of the opcode concerned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The input ended inside an opcode's argument (or before `STOP`).
    #[error(
        "pickle truncated: opcode {opcode} at offset {offset} needs {needed} bytes of argument, only {available} left"
    )]
    Truncated {
        /// Offset of the opcode byte.
        offset: usize,
        /// Name of the opcode.
        opcode: &'static str,
        /// Bytes the argument needs (for text arguments: up to the newline).
        needed: u64,
        /// Bytes left in the input.
        available: usize,
    },
    /// The input ended without a `STOP` opcode.
    #[error("pickle truncated: no STOP opcode before the end of the input ({len} bytes)")]
    NoStop {
        /// Input length, i.e. the offset where the next opcode was expected.
        len: usize,
    },
    /// A byte that is no pickle opcode.
    #[error("unknown pickle opcode 0x{byte:02x} at offset {offset}")]
    UnknownOpcode {
        /// Offset of the byte.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// An opcode that exists but is refused (object construction, sets, buffers, ...).
    #[error("unsupported pickle opcode {opcode} (0x{byte:02x}) at offset {offset}: {why}")]
    Unsupported {
        /// Offset of the opcode byte.
        offset: usize,
        /// The opcode byte.
        byte: u8,
        /// Name of the opcode.
        opcode: &'static str,
        /// Why it is refused.
        why: &'static str,
    },
    /// A well-formed opcode that cannot be applied (empty stack, bad argument, missing memo entry, ...).
    #[error("malformed pickle: opcode {opcode} at offset {offset}: {msg}")]
    Malformed {
        /// Offset of the opcode byte.
        offset: usize,
        /// Name of the opcode.
        opcode: &'static str,
        /// What is wrong.
        msg: String,
    },
}

/// A pickle file that could not be read: names the file.
#[derive(Debug, thiserror::Error)]
pub enum PickleFileError {
    /// The file could not be opened or read.
    #[error("cannot read pickle file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's content is not a readable pickle.
    #[error("{}: {source}", path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What went wrong, with the byte offset.
        source: PickleError,
    },
}

/// Reads and parses a pickle file (see the module documentation for what is accepted).
pub fn read_pickle_file(path: impl AsRef<Path>) -> Result<PickleValue, PickleFileError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PickleFileError::Io { path: path.to_path_buf(), source })?;
    parse_pickle(&bytes).map_err(|source| PickleFileError::Pickle { path: path.to_path_buf(), source })
}

/// Deepest nesting of containers accepted when building the result tree.
const MAX_DEPTH: usize = 1000;
/// Most values the result tree may hold (guards against memo-sharing blow-ups).
const MAX_OUTPUT_NODES: usize = 100_000_000;

/// Parses one pickle from `bytes` (up to its `STOP`).
pub fn parse_pickle(bytes: &[u8]) -> Result<PickleValue, PickleError> {
    let mut vm =
        Vm { input: bytes, pos: 0, nodes: Vec::new(), stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    let root = vm.run()?;
    let mut budget = MAX_OUTPUT_NODES;
    let mut in_progress = vec![false; vm.nodes.len()];
    vm.build(root, 0, &mut in_progress, &mut budget)
}

/// A value under construction: containers refer to other nodes by index, so memoised containers that
/// are filled later (`EMPTY_LIST`, `BINPUT`, `MARK`, ..., `APPENDS`) are seen filled through the memo.
#[derive(Debug)]
enum Node {
    /// A scalar (None, bool, int, float, bytes, text).
    Leaf(PickleValue),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<usize>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    /// Memo index → node.
    memo: HashMap<u64, usize>,
}

fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

impl<'a> Vm<'a> {
    fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let offset = self.pos;
            let Some(&op) = self.input.get(offset) else {
                return Err(PickleError::NoStop { len: self.input.len() });
            };
            let name = opcode_name(op).ok_or(PickleError::UnknownOpcode { offset, byte: op })?;
            self.pos += 1;
            let cx = Op { offset, name };
            match op {
                b'.' => {
                    // As Python: the result is the top of the stack; anything below it is ignored.
                    return self.stack.pop().ok_or_else(|| cx.malformed("stack is empty".into()));
                }
                0x80 => {
                    let v = self.take(cx, 1)?[0];
                    if v > 5 {
                        return Err(cx.malformed(format!("protocol {v} is not supported (0-5)")));
                    }
                }
                0x95 => {
                    // FRAME: an 8-byte length prefix of the following opcodes; framing carries no data.
                    self.take(cx, 8)?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // As Python: with nothing above the innermost MARK, POP discards the mark.
                    if self.stack.len() > self.marks.last().copied().unwrap_or(0) {
                        self.stack.pop();
                    } else {
                        self.pop_mark(cx)?;
                    }
                }
                b'1' => {
                    self.pop_mark(cx)?;
                }
                b'2' => {
                    let top = self.top(cx)?;
                    self.stack.push(top);
                }
                b'N' => self.push(Node::Leaf(PickleValue::None)),
                0x88 => self.push(Node::Leaf(PickleValue::Bool(true))),
                0x89 => self.push(Node::Leaf(PickleValue::Bool(false))),
                b'I' => {
                    let line = self.line(cx)?;
                    let node = match line {
                        b"01" => Node::Leaf(PickleValue::Bool(true)),
                        b"00" => Node::Leaf(PickleValue::Bool(false)),
                        _ => Node::Leaf(PickleValue::Int(parse_decimal(cx, line)?)),
                    };
                    self.push(node);
                }
                b'L' => {
                    let line = self.line(cx)?;
                    let line = line.strip_suffix(b"L").unwrap_or(line);
                    let v = parse_decimal(cx, line)?;
                    self.push(Node::Leaf(PickleValue::Int(v)));
                }
                b'J' => {
                    let b = self.take(cx, 4)?;
                    self.push(Node::Leaf(PickleValue::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)));
                }
                b'K' => {
                    let b = self.take(cx, 1)?;
                    self.push(Node::Leaf(PickleValue::Int(b[0] as i64)));
                }
                b'M' => {
                    let b = self.take(cx, 2)?;
                    self.push(Node::Leaf(PickleValue::Int(u16::from_le_bytes([b[0], b[1]]) as i64)));
                }
                0x8a => {
                    let n = self.take(cx, 1)?[0] as u64;
                    let b = self.take_len(cx, n)?;
                    let v = le_signed(cx, b)?;
                    self.push(Node::Leaf(PickleValue::Int(v)));
                }
                0x8b => {
                    let n = self.len_i32(cx)?;
                    let b = self.take_len(cx, n)?;
                    let v = le_signed(cx, b)?;
                    self.push(Node::Leaf(PickleValue::Int(v)));
                }
                b'F' => {
                    let line = self.line(cx)?;
                    let v = std::str::from_utf8(line).ok().and_then(|s| parse_py_float(s.trim())).ok_or_else(|| {
                        cx.malformed(format!("bad float literal {:?}", String::from_utf8_lossy(line)))
                    })?;
                    self.push(Node::Leaf(PickleValue::Float(v)));
                }
                b'G' => {
                    let b = self.take(cx, 8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Node::Leaf(PickleValue::Float(f64::from_be_bytes(a))));
                }
                b'S' => {
                    let line = self.line(cx)?;
                    let bytes = unquote_py2_string(line).map_err(|m| cx.malformed(m))?;
                    self.push(Node::Leaf(PickleValue::Bytes(bytes)));
                }
                b'T' => {
                    let n = self.len_i32(cx)?;
                    let b = self.take_len(cx, n)?.to_vec();
                    self.push(Node::Leaf(PickleValue::Bytes(b)));
                }
                b'U' | b'C' => {
                    let n = self.take(cx, 1)?[0] as u64;
                    let b = self.take_len(cx, n)?.to_vec();
                    self.push(Node::Leaf(PickleValue::Bytes(b)));
                }
                b'B' => {
                    let n = self.len_u32(cx)?;
                    let b = self.take_len(cx, n)?.to_vec();
                    self.push(Node::Leaf(PickleValue::Bytes(b)));
                }
                0x8e => {
                    let n = self.len_u64(cx)?;
                    let b = self.take_len(cx, n)?.to_vec();
                    self.push(Node::Leaf(PickleValue::Bytes(b)));
                }
                b'V' => {
                    let line = self.line(cx)?;
                    let s = raw_unicode_escape_decode(line).map_err(|m| cx.malformed(m))?;
                    self.push(Node::Leaf(PickleValue::Str(s)));
                }
                b'X' => {
                    let n = self.len_u32(cx)?;
                    let b = self.take_len(cx, n)?;
                    self.push(Node::Leaf(PickleValue::Str(String::from_utf8_lossy(b).into_owned())));
                }
                0x8c => {
                    let n = self.take(cx, 1)?[0] as u64;
                    let b = self.take_len(cx, n)?;
                    self.push(Node::Leaf(PickleValue::Str(String::from_utf8_lossy(b).into_owned())));
                }
                0x8d => {
                    let n = self.len_u64(cx)?;
                    let b = self.take_len(cx, n)?;
                    self.push(Node::Leaf(PickleValue::Str(String::from_utf8_lossy(b).into_owned())));
                }
                b']' => self.push(Node::List(Vec::new())),
                b'}' => self.push(Node::Dict(Vec::new())),
                b')' => self.push(Node::Tuple(Vec::new())),
                b'l' => {
                    let items = self.pop_mark(cx)?;
                    self.push(Node::List(items));
                }
                b't' => {
                    let items = self.pop_mark(cx)?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return Err(cx.malformed(format!("needs {n} value(s) on the stack")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items));
                }
                b'd' => {
                    let items = self.pop_mark(cx)?;
                    let pairs = pairs(cx, items)?;
                    self.push(Node::Dict(pairs));
                }
                b'a' => {
                    let item = self.pop(cx)?;
                    let list = self.top(cx)?;
                    match &mut self.nodes[list] {
                        Node::List(v) => v.push(item),
                        other => return Err(cx.malformed(format!("target is a {}, not a list", node_type(other)))),
                    }
                }
                b'e' => {
                    let items = self.pop_mark(cx)?;
                    let list = self.top(cx)?;
                    match &mut self.nodes[list] {
                        Node::List(v) => v.extend(items),
                        other => return Err(cx.malformed(format!("target is a {}, not a list", node_type(other)))),
                    }
                }
                b's' => {
                    let value = self.pop(cx)?;
                    let key = self.pop(cx)?;
                    let dict = self.top(cx)?;
                    match &mut self.nodes[dict] {
                        Node::Dict(d) => d.push((key, value)),
                        other => return Err(cx.malformed(format!("target is a {}, not a dict", node_type(other)))),
                    }
                }
                b'u' => {
                    let items = self.pop_mark(cx)?;
                    let new = pairs(cx, items)?;
                    let dict = self.top(cx)?;
                    match &mut self.nodes[dict] {
                        Node::Dict(d) => d.extend(new),
                        other => return Err(cx.malformed(format!("target is a {}, not a dict", node_type(other)))),
                    }
                }
                b'p' => {
                    let line = self.line(cx)?;
                    let idx = parse_decimal(cx, line)?;
                    let idx = u64::try_from(idx).map_err(|_| cx.malformed(format!("negative memo index {idx}")))?;
                    self.put(cx, idx)?;
                }
                b'q' => {
                    let idx = self.take(cx, 1)?[0] as u64;
                    self.put(cx, idx)?;
                }
                b'r' => {
                    let idx = self.len_u32(cx)?;
                    self.put(cx, idx)?;
                }
                0x94 => {
                    // As Python: the next index is the number of entries in the memo.
                    let idx = self.memo.len() as u64;
                    self.put(cx, idx)?;
                }
                b'g' => {
                    let line = self.line(cx)?;
                    let idx = parse_decimal(cx, line)?;
                    self.get(cx, idx)?;
                }
                b'h' => {
                    let idx = self.take(cx, 1)?[0] as i64;
                    self.get(cx, idx)?;
                }
                b'j' => {
                    let idx = self.len_u32(cx)? as i64;
                    self.get(cx, idx)?;
                }
                b'c' | 0x93 | b'R' | b'b' | b'i' | b'o' | 0x81 | 0x92 | 0x82..=0x84 => {
                    return Err(PickleError::Unsupported {
                        offset,
                        byte: op,
                        opcode: name,
                        why: "constructing or calling Python objects is not allowed (data-only reader)",
                    })
                }
                b'P' | b'Q' => {
                    return Err(PickleError::Unsupported {
                        offset,
                        byte: op,
                        opcode: name,
                        why: "persistent ids are not supported",
                    })
                }
                0x8f..=0x91 => {
                    return Err(PickleError::Unsupported {
                        offset,
                        byte: op,
                        opcode: name,
                        why: "sets are not supported",
                    })
                }
                _ => {
                    // 0x96..=0x98: protocol-5 buffers.
                    return Err(PickleError::Unsupported {
                        offset,
                        byte: op,
                        opcode: name,
                        why: "out-of-band buffers and bytearrays are not supported",
                    });
                }
            }
        }
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
    }

    /// Pops one value; a value below the innermost mark is not available.
    fn pop(&mut self, cx: Op) -> Result<usize, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(cx.malformed(if self.stack.is_empty() {
                "stack is empty".into()
            } else {
                "no value above the last MARK".into()
            }));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    /// The top value (without popping), not below the innermost mark.
    fn top(&self, cx: Op) -> Result<usize, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(cx.malformed("no value on the stack above the last MARK".into()));
        }
        Ok(*self.stack.last().expect("checked non-empty"))
    }

    fn pop_mark(&mut self, cx: Op) -> Result<Vec<usize>, PickleError> {
        let m = self.marks.pop().ok_or_else(|| cx.malformed("no MARK on the stack".into()))?;
        Ok(self.stack.split_off(m))
    }

    fn put(&mut self, cx: Op, idx: u64) -> Result<(), PickleError> {
        let top = *self.stack.last().ok_or_else(|| cx.malformed("stack is empty".into()))?;
        self.memo.insert(idx, top);
        Ok(())
    }

    fn get(&mut self, cx: Op, idx: i64) -> Result<(), PickleError> {
        let node = u64::try_from(idx)
            .ok()
            .and_then(|i| self.memo.get(&i).copied())
            .ok_or_else(|| cx.malformed(format!("memo entry {idx} was never stored")))?;
        self.stack.push(node);
        Ok(())
    }

    /// Takes exactly `n` argument bytes.
    fn take(&mut self, cx: Op, n: usize) -> Result<&'a [u8], PickleError> {
        self.take_len(cx, n as u64)
    }

    fn take_len(&mut self, cx: Op, n: u64) -> Result<&'a [u8], PickleError> {
        let available = self.input.len() - self.pos;
        if n > available as u64 {
            return Err(PickleError::Truncated { offset: cx.offset, opcode: cx.name, needed: n, available });
        }
        let s = &self.input[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn len_i32(&mut self, cx: Op) -> Result<u64, PickleError> {
        let b = self.take(cx, 4)?;
        let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        u64::try_from(n).map_err(|_| cx.malformed(format!("negative length {n}")))
    }

    fn len_u32(&mut self, cx: Op) -> Result<u64, PickleError> {
        let b = self.take(cx, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
    }

    fn len_u64(&mut self, cx: Op) -> Result<u64, PickleError> {
        let b = self.take(cx, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A text argument up to (excluding) the next `\n`; a trailing `\r` is kept out too.
    fn line(&mut self, cx: Op) -> Result<&'a [u8], PickleError> {
        let rest = &self.input[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(PickleError::Truncated {
                offset: cx.offset,
                opcode: cx.name,
                needed: rest.len() as u64 + 1,
                available: rest.len(),
            });
        };
        self.pos += nl + 1;
        let line = &rest[..nl];
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Converts node `id` to an owned tree, refusing cycles, very deep nesting and huge expansions.
    fn build(
        &self,
        id: usize,
        depth: usize,
        in_progress: &mut [bool],
        budget: &mut usize,
    ) -> Result<PickleValue, PickleError> {
        // The tree is built when STOP is reached, so these errors point at STOP.
        let err = |msg: String| PickleError::Malformed { offset: self.pos - 1, opcode: "STOP", msg };
        if depth > MAX_DEPTH {
            return Err(err(format!("containers nested deeper than {MAX_DEPTH} levels")));
        }
        if *budget == 0 {
            return Err(err(format!("result would hold more than {MAX_OUTPUT_NODES} values (shared objects)")));
        }
        *budget -= 1;
        if in_progress[id] {
            return Err(err("recursive structure (a container contains itself)".into()));
        }
        let children = |ids: &[usize], in_progress: &mut [bool], budget: &mut usize| {
            in_progress[id] = true;
            let r = ids.iter().map(|&c| self.build(c, depth + 1, in_progress, budget)).collect::<Result<Vec<_>, _>>();
            in_progress[id] = false;
            r
        };
        Ok(match &self.nodes[id] {
            Node::Leaf(v) => v.clone(),
            Node::List(v) => PickleValue::List(children(v, in_progress, budget)?),
            Node::Tuple(v) => PickleValue::Tuple(children(v, in_progress, budget)?),
            Node::Dict(d) => {
                let flat: Vec<usize> = d.iter().flat_map(|&(k, v)| [k, v]).collect();
                let mut vals = children(&flat, in_progress, budget)?.into_iter();
                let mut out = Vec::with_capacity(d.len());
                while let (Some(k), Some(v)) = (vals.next(), vals.next()) {
                    out.push((k, v));
                }
                PickleValue::Dict(out)
            }
        })
    }
}

/// The opcode being executed, for error messages.
#[derive(Clone, Copy)]
struct Op {
    offset: usize,
    name: &'static str,
}

impl Op {
    fn malformed(self, msg: String) -> PickleError {
        PickleError::Malformed { offset: self.offset, opcode: self.name, msg }
    }
}

fn node_type(n: &Node) -> &'static str {
    match n {
        Node::Leaf(PickleValue::None) => "None",
        Node::Leaf(PickleValue::Bool(_)) => "bool",
        Node::Leaf(PickleValue::Int(_)) => "int",
        Node::Leaf(PickleValue::Float(_)) => "float",
        Node::Leaf(PickleValue::Bytes(_)) => "str (bytes)",
        Node::Leaf(PickleValue::Str(_)) => "unicode",
        Node::Leaf(_) => "container",
        Node::List(_) => "list",
        Node::Tuple(_) => "tuple",
        Node::Dict(_) => "dict",
    }
}

fn pairs(cx: Op, items: Vec<usize>) -> Result<Vec<(usize, usize)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(cx.malformed(format!("odd number of values ({}) for key/value pairs", items.len())));
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

fn parse_decimal(cx: Op, line: &[u8]) -> Result<i64, PickleError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| cx.malformed(format!("bad or out-of-range integer {:?}", String::from_utf8_lossy(line))))
}

/// Little-endian two's-complement integer (LONG1 / LONG4), which must fit an `i64`.
fn le_signed(cx: Op, b: &[u8]) -> Result<i64, PickleError> {
    if b.is_empty() {
        return Ok(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Bytes beyond the 8th must be pure sign extension.
    if b.len() > 8 && (b[8..].iter().any(|&x| x != fill) || ((b[7] & 0x80 != 0) != negative)) {
        return Err(cx.malformed(format!("integer of {} bytes does not fit 64 bits", b.len())));
    }
    let mut a = [fill; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    Ok(i64::from_le_bytes(a))
}

/// Python's `float()` on a protocol-0 literal (also `inf`, `nan`).
fn parse_py_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// Decodes a protocol-0 `STRING` argument: a Python 2 `repr` of a byte string, quoted with `'` or `"`,
/// with the `string_escape` escapes (`\\ \' \" \n \r \t \a \b \f \v \xHH`, octal `\ooo`, `\<newline>`).
fn unquote_py2_string(line: &[u8]) -> Result<Vec<u8>, String> {
    let q = *line.first().ok_or("empty STRING argument")?;
    if line.len() < 2 || (q != b'\'' && q != b'"') || line[line.len() - 1] != q {
        return Err(format!("STRING argument is not quoted: {:?}", String::from_utf8_lossy(line)));
    }
    let body = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i).ok_or("STRING argument ends with a lone backslash")?;
        i += 1;
        match e {
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2).ok_or("truncated \\x escape in STRING argument")?;
                let s = std::str::from_utf8(h).map_err(|_| "bad \\x escape in STRING argument")?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| format!("bad \\x escape \\x{s} in STRING argument"))?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < body.len() && (b'0'..=b'7').contains(&body[i]) {
                    v = v * 8 + (body[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push((v & 0xff) as u8);
            }
            // Python keeps unknown escapes verbatim.
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Decodes Python's `raw-unicode-escape`: bytes are Latin-1 code points except `\uXXXX` / `\UXXXXXXXX`
/// preceded by an odd number of backslashes.
fn raw_unicode_escape_decode(line: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c != b'\\' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let run = line[i..].iter().take_while(|&&b| b == b'\\').count();
        let next = line.get(i + run).copied();
        let digits = match next {
            Some(b'u') => 4,
            Some(b'U') => 8,
            _ => 0,
        };
        if run % 2 == 1 && digits > 0 {
            out.extend(std::iter::repeat_n('\\', run - 1));
            let start = i + run + 1;
            let h = line.get(start..start + digits).ok_or("truncated \\u escape in UNICODE argument")?;
            let s = std::str::from_utf8(h).map_err(|_| "bad \\u escape in UNICODE argument")?;
            let cp = u32::from_str_radix(s, 16).map_err(|_| format!("bad \\u escape \\u{s} in UNICODE argument"))?;
            // A lone surrogate cannot be a Rust char; it becomes U+FFFD.
            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
            i = start + digits;
        } else {
            out.extend(std::iter::repeat_n('\\', run));
            i += run;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> PickleValue {
        PickleValue::Bytes(s.as_bytes().to_vec())
    }

    /// `cPickle.dumps([{'raw': 'THE LADY with caf\xe9', 'sent_id': 0}, u'caf\xe9'], 2)` (Python 2.7.18),
    /// `pickletools.dis`-checked.
    const CPICKLE2: &[u8] = b"\x80\x02]q\x01(}q\x02(U\x03rawq\x03U\x12THE LADY with caf\xe9q\x04U\x07sent_idq\x05K\x00uX\x05\x00\x00\x00caf\xc3\xa9q\x06e.";

    #[test]
    fn cpickle_protocol2_with_latin1_bytes() {
        let v = parse_pickle(CPICKLE2).unwrap();
        let items = v.as_seq().unwrap();
        assert_eq!(items.len(), 2);
        let raw = items[0].get("raw").unwrap();
        assert_eq!(raw, &PickleValue::Bytes(b"THE LADY with caf\xe9".to_vec()));
        // Not UTF-8 → Latin-1 fallback.
        assert_eq!(raw.as_text().unwrap(), "THE LADY with café");
        assert_eq!(items[0].get("sent_id"), Some(&PickleValue::Int(0)));
        assert_eq!(items[1], PickleValue::Str("café".into()));
    }

    #[test]
    fn decode_text_prefers_utf8() {
        assert_eq!(decode_text("café".as_bytes()), "café");
        assert_eq!(decode_text(b"caf\xe9"), "café");
        assert_eq!(decode_text(b"\xff\xfe"), "ÿþ");
        assert!(matches!(decode_text(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn integers_all_forms() {
        // [BININT1 7, BININT2 300, BININT -3, INT 1099511627776, LONG1 -1, LONG1 2**63-1, LONG 5L, I01, I00]
        let mut p = b"\x80\x02](K\x07M\x2c\x01J\xfd\xff\xff\xffI1099511627776\n\x8a\x01\xff".to_vec();
        p.extend_from_slice(b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f");
        p.extend_from_slice(b"L5L\nI01\nI00\n\x8a\x00e.");
        let v = parse_pickle(&p).unwrap();
        assert_eq!(
            v,
            PickleValue::List(vec![
                PickleValue::Int(7),
                PickleValue::Int(300),
                PickleValue::Int(-3),
                PickleValue::Int(1 << 40),
                PickleValue::Int(-1),
                PickleValue::Int(i64::MAX),
                PickleValue::Int(5),
                PickleValue::Bool(true),
                PickleValue::Bool(false),
                PickleValue::Int(0),
            ])
        );
        // 2**64 does not fit.
        let e = parse_pickle(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap_err();
        assert!(matches!(e, PickleError::Malformed { offset: 0, opcode: "LONG1", .. }), "{e}");
        // 2**63 does not fit either (positive with the 8th byte's top bit set).
        let e = parse_pickle(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").unwrap_err();
        assert!(matches!(e, PickleError::Malformed { opcode: "LONG1", .. }), "{e}");
        // -2**63 fits.
        let v = parse_pickle(b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.").unwrap();
        assert_eq!(v, PickleValue::Int(i64::MIN));
    }

    #[test]
    fn floats_none_bools_tuples() {
        let mut p = b"\x80\x02(G\x3f\xf8\x00\x00\x00\x00\x00\x00F-2.5\nN\x88\x89)K\x01\x85K\x01K\x02\x86".to_vec();
        p.extend_from_slice(b"K\x01K\x02K\x03\x87(K\x01K\x02K\x03K\x04tt.");
        let v = parse_pickle(&p).unwrap();
        let i = PickleValue::Int;
        assert_eq!(
            v,
            PickleValue::Tuple(vec![
                PickleValue::Float(1.5),
                PickleValue::Float(-2.5),
                PickleValue::None,
                PickleValue::Bool(true),
                PickleValue::Bool(false),
                PickleValue::Tuple(vec![]),
                PickleValue::Tuple(vec![i(1)]),
                PickleValue::Tuple(vec![i(1), i(2)]),
                PickleValue::Tuple(vec![i(1), i(2), i(3)]),
                PickleValue::Tuple(vec![i(1), i(2), i(3), i(4)]),
            ])
        );
    }

    #[test]
    fn strings_all_forms() {
        let long = "x".repeat(300);
        let mut p = b"\x80\x02(U\x02abT\x2c\x01\x00\x00".to_vec();
        p.extend_from_slice(long.as_bytes());
        // BINUNICODE, SHORT_BINUNICODE, BINBYTES, SHORT_BINBYTES, BINUNICODE8, BINBYTES8
        p.extend_from_slice(b"X\x02\x00\x00\x00\xc3\xa9\x8c\x01zB\x01\x00\x00\x00\xffC\x01\xfe");
        p.extend_from_slice(b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00u\x8e\x01\x00\x00\x00\x00\x00\x00\x00\x00");
        // protocol 0: STRING with escapes, UNICODE with raw-unicode-escape
        p.extend_from_slice(b"S'it\\'s \\xe9\\n\\101'\nS\"q\"\nVcaf\\u00e9 \\\\u0041 \xe9\nt.");
        let v = parse_pickle(&p).unwrap();
        assert_eq!(
            v,
            PickleValue::Tuple(vec![
                b("ab"),
                b(&long),
                PickleValue::Str("é".into()),
                PickleValue::Str("z".into()),
                PickleValue::Bytes(vec![0xff]),
                PickleValue::Bytes(vec![0xfe]),
                PickleValue::Str("u".into()),
                PickleValue::Bytes(vec![0]),
                PickleValue::Bytes(b"it's \xe9\nA".to_vec()),
                b("q"),
                // `\\u0041` has an even backslash run: not an escape.
                PickleValue::Str("café \\\\u0041 é".into()),
            ])
        );
    }

    #[test]
    fn protocol0_containers_and_memo() {
        // Python 2 `pickle.dumps({'a': [1, 'a']}, 0)`-style stream: (dp0 / S'a' / p1 / (lp2 / I1 / ag1 / a s .
        let p = b"(dp0\nS'a'\np1\n(lp2\nI1\nag1\nas.";
        let v = parse_pickle(p).unwrap();
        assert_eq!(v, PickleValue::Dict(vec![(b("a"), PickleValue::List(vec![PickleValue::Int(1), b("a")]))]));
        // Protocol 1 DICT/LIST with MARK, SETITEM.
        let p = b"((U\x01kK\x01d(K\x02lt.";
        assert_eq!(
            parse_pickle(p).unwrap(),
            PickleValue::Tuple(vec![
                PickleValue::Dict(vec![(b("k"), PickleValue::Int(1))]),
                PickleValue::List(vec![PickleValue::Int(2)])
            ])
        );
        // Values left below the result are ignored, as by `pickle.loads`.
        assert_eq!(parse_pickle(b"K\x01N.").unwrap(), PickleValue::None);
        // POP with nothing above the MARK discards the mark; POP_MARK discards the mark and what is above it.
        assert_eq!(parse_pickle(b"K\x01(0.").unwrap(), PickleValue::Int(1));
        assert_eq!(parse_pickle(b"K\x01(K\x02K\x031.").unwrap(), PickleValue::Int(1));
        let p = b"}U\x01kK\x05s.";
        assert_eq!(parse_pickle(p).unwrap(), PickleValue::Dict(vec![(b("k"), PickleValue::Int(5))]));
    }

    #[test]
    fn memo_sees_containers_filled_later() {
        // x = []; [x, x] with x filled after its BINPUT: EMPTY_LIST BINPUT 0 ... the second reference is a
        // BINGET of the same list, which must come out filled. Also LONG_BINPUT / LONG_BINGET, MEMOIZE, DUP, POP.
        let p = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00](]r\x00\x01\x00\x00(K\x01K\x02ej\x00\x01\x00\x00N\x94\x30h\x01\x32\x30e.";
        let v = parse_pickle(p).unwrap();
        let inner = PickleValue::List(vec![PickleValue::Int(1), PickleValue::Int(2)]);
        assert_eq!(v, PickleValue::List(vec![inner.clone(), inner, PickleValue::None]));
    }

    #[test]
    fn dict_get_accepts_bytes_and_text_keys_last_wins() {
        let v = PickleValue::Dict(vec![
            (b("k"), PickleValue::Int(1)),
            (PickleValue::Str("k".into()), PickleValue::Int(2)),
            (b("other"), PickleValue::Int(3)),
        ]);
        assert_eq!(v.get("k"), Some(&PickleValue::Int(2)));
        assert_eq!(v.get("missing"), None);
        assert_eq!(PickleValue::Int(1).get("k"), None);
    }

    #[test]
    fn errors_name_offset_and_opcode() {
        // Truncated SHORT_BINSTRING argument.
        let e = parse_pickle(b"\x80\x02U\x05ab").unwrap_err();
        assert_eq!(e, PickleError::Truncated { offset: 2, opcode: "SHORT_BINSTRING", needed: 5, available: 2 });
        assert!(e.to_string().contains("SHORT_BINSTRING at offset 2"), "{e}");
        // Truncated BINSTRING length itself.
        let e = parse_pickle(b"\x80\x02T\x05\x00").unwrap_err();
        assert!(matches!(e, PickleError::Truncated { offset: 2, opcode: "BINSTRING", needed: 4, .. }), "{e}");
        // Huge claimed length, nothing allocated.
        let e = parse_pickle(b"\x80\x02T\xff\xff\xff\x7f").unwrap_err();
        assert!(matches!(e, PickleError::Truncated { needed: 0x7fff_ffff, available: 0, .. }), "{e}");
        // No STOP.
        let e = parse_pickle(b"\x80\x02]q\x00").unwrap_err();
        assert_eq!(e, PickleError::NoStop { len: 5 });
        assert!(e.to_string().contains("no STOP"), "{e}");
        // Empty input.
        assert_eq!(parse_pickle(b"").unwrap_err(), PickleError::NoStop { len: 0 });
        // Unknown opcode.
        let e = parse_pickle(b"\x80\x02\xff.").unwrap_err();
        assert_eq!(e, PickleError::UnknownOpcode { offset: 2, byte: 0xff });
        assert_eq!(e.to_string(), "unknown pickle opcode 0xff at offset 2");
        // Object construction is refused.
        let e = parse_pickle(b"\x80\x02cos\nsystem\nU\x02lsR.").unwrap_err();
        assert!(matches!(e, PickleError::Unsupported { offset: 2, byte: b'c', opcode: "GLOBAL", .. }), "{e}");
        assert!(e.to_string().contains("GLOBAL (0x63) at offset 2"), "{e}");
        let e = parse_pickle(b"\x80\x02N)R.").unwrap_err();
        assert!(matches!(e, PickleError::Unsupported { offset: 4, opcode: "REDUCE", .. }), "{e}");
        let e = parse_pickle(b"\x80\x04\x8f.").unwrap_err();
        assert!(matches!(e, PickleError::Unsupported { opcode: "EMPTY_SET", .. }), "{e}");
        // Structural errors.
        let e = parse_pickle(b"\x80\x02e.").unwrap_err();
        assert!(matches!(e, PickleError::Malformed { offset: 2, opcode: "APPENDS", .. }), "{e}");
        let e = parse_pickle(b"\x80\x02K\x01K\x02a.").unwrap_err();
        assert!(e.to_string().contains("APPEND at offset 6: target is a int, not a list"), "{e}");
        let e = parse_pickle(b"\x80\x02h\x07.").unwrap_err();
        assert!(e.to_string().contains("memo entry 7 was never stored"), "{e}");
        let e = parse_pickle(b"\x80\x02}(K\x01u.").unwrap_err();
        assert!(e.to_string().contains("odd number"), "{e}");
        let e = parse_pickle(b"\x80\x09.").unwrap_err();
        assert!(e.to_string().contains("protocol 9"), "{e}");
        let e = parse_pickle(b"\x80\x02.").unwrap_err();
        assert!(matches!(e, PickleError::Malformed { offset: 2, opcode: "STOP", .. }), "{e}");
        // A value below a MARK is not reachable.
        let e = parse_pickle(b"](a.").unwrap_err();
        assert!(matches!(e, PickleError::Malformed { offset: 2, opcode: "APPEND", .. }), "{e}");
        let e = parse_pickle(b"I12x\n.").unwrap_err();
        assert!(e.to_string().contains("INT at offset 0: bad or out-of-range integer"), "{e}");
        let e = parse_pickle(b"S'abc\n.").unwrap_err();
        assert!(e.to_string().contains("not quoted"), "{e}");
        let e = parse_pickle(b"I12").unwrap_err();
        assert!(matches!(e, PickleError::Truncated { offset: 0, opcode: "INT", .. }), "{e}");
    }

    #[test]
    fn recursive_structure_is_refused() {
        // l = []; l.append(l)
        let e = parse_pickle(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(e.to_string().contains("recursive structure"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![b']'; MAX_DEPTH + 5];
        p.extend(std::iter::repeat_n(b'a', MAX_DEPTH + 4));
        p.push(b'.');
        let e = parse_pickle(&p).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn read_pickle_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs(unc).p");
        let e = read_pickle_file(&path).unwrap_err();
        assert!(e.to_string().contains("refs(unc).p"), "{e}");
        std::fs::write(&path, b"\x80\x02]q\x00(").unwrap();
        let e = read_pickle_file(&path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("refs(unc).p") && msg.contains("no STOP"), "{msg}");
        std::fs::write(&path, CPICKLE2).unwrap();
        assert!(read_pickle_file(&path).is_ok());
    }
}
