//! COCO instance masks — polygons, uncompressed and compressed RLE — bit-identical to pycocotools 2.0.11
//! (`pycocotools.mask`: `frPyObjects`, `merge`, `encode`, `decode`, `area`, `toBbox`, `iou`).
//!
//! Written from the facts of cocoapi's `maskApi.c` (the algorithms must be the same for the pixels to be
//! the same; the code is our own). The facts that matter:
//!
//! * **RLE**: runs over the mask in *column-major* order (down each column, then the next column),
//!   alternating 0-runs and 1-runs, always starting with a (possibly empty) 0-run. Encoding starts a new
//!   run whenever the byte changes; [`Rle::encode`] treats every nonzero byte as 1.
//! * **Compressed string** ([`Rle`]'s `Display`, [`Rle::from_compressed`]): each count is written as a
//!   signed little-endian base-32 varint: 5 value bits per character, `0x20` = "more characters follow",
//!   and in the last character `0x10` is the sign bit (the value is sign-extended from it); every
//!   character is offset by 48 (`'0'`), so the alphabet is ASCII 48..=111. Counts with index `i > 2` are
//!   stored as the delta `counts[i] - counts[i - 2]` (note: `i > 2`, so `counts[2]` itself is stored raw).
//!   Encoding stops when the remaining value is 0 (or −1 with the sign bit set).
//! * **Polygon rasterisation** (`rleFrPoly`): vertices are scaled by 5 and converted with C's `(int)(5·v + 0.5)`,
//!   i.e. *truncation toward zero* of `5·v + 0.5` (so −0.1 → 0, not −1). The closed outline is walked edge by
//!   edge at that resolution along its major axis; the minor coordinate is `(int)(start + s·t + 0.5)`
//!   (truncation again) with the edge normalised to run in increasing major-axis order (`flip`) so that an
//!   edge rasterises the same in both directions. Wherever the walk changes column (`u`), the crossing at
//!   `x = min(u, u_prev)` (written `u − 1` when moving right) is mapped back with `xd = (x + 0.5)/5 − 0.5`
//!   and kept only if `xd` is an integer in `[0, w − 1]`; its row is `yd = (min(v, v_prev) + 0.5)/5 − 0.5`,
//!   clamped to `[0, h]` and rounded up (`ceil`). Each kept point toggles the mask at column-major index
//!   `x·h + y`; the indices (plus `h·w`) are sorted and differenced into counts, and zero-length runs are
//!   folded away pairwise. Only crossings at upsampled columns `5n + 2 | 5n + 3` survive, so negative
//!   walk coordinates never matter: the vertex rounding is what must truncate toward zero (the fixture
//!   fails with `floor` there), while truncation vs `floor` of the walk's minor coordinate is equivalent. Several polygons of one object are rasterised separately and unioned with
//!   [`Rle::merge`].
//! * **Bounding box** (`toBbox`, 2.0.11's rewritten version): over the 1-runs, `x` from the columns of a
//!   run's first and last pixel; a run spanning several columns makes `y` cover the full height
//!   `[0, h − 1]`. Empty → `[0, 0, 0, 0]`. Arithmetic in `u32` (wrapping, as C's `uint`).
//! * **IoU** (`rleIou`): first the box IoU; only when it is `> 0` are the runs walked. `i = 0` → 0; crowd
//!   (`iscrowd` refers to the second argument, the ground truth) divides by the *first* RLE's area
//!   instead of the union. RLEs of different sizes give −1 (when their boxes overlap) as in pycocotools.
//!
//! Where pycocotools would misbehave on malformed input, we return a [`MaskError`] instead:
//! an odd number of polygon coordinates (pycocotools silently drops the last value), fewer than 3 points
//! (pycocotools' `frPyObjects` reads a 4-value first polygon as a *box* `[x, y, w, h]` and refuses fewer
//! than 4 values; see [`bbox_to_rle`] for the box path), no polygons at all (`IndexError`), counts that do
//! not sum to `h·w` (pycocotools' `decode` raises when they exceed it and returns uninitialised memory when
//! they fall short), a compressed string with characters outside 48..=111 or cut short (read past its end
//! in C), and a segmentation whose `size` differs from the image's (pycocotools ignores the image size).
//! Polygon coordinates must be finite and within ±[`MAX_POLYGON_COORD`]. pycocotools decodes compressed
//! deltas of 2^30 or more wrongly (a 32-bit shift in `rleFrString`); we decode them correctly (they only
//! occur for masks above 10^9 pixels).

use std::fmt;

/// Largest accepted `|coordinate|` of a polygon vertex, in pixels (the rasteriser walks the outline at
/// 5× resolution, so absurd coordinates would cost time; pycocotools overflows `int` near 4·10^8).
pub const MAX_POLYGON_COORD: f64 = 1.0e6;

/// Why a COCO segmentation could not be read or converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskError {
    /// The json value does not have the shape of a COCO `segmentation`.
    #[error("segmentation json: {0}")]
    Json(String),
    /// A polygon list with no polygon in it.
    #[error("segmentation has no polygons (expected a list of [x0, y0, x1, y1, ...] lists)")]
    NoPolygons,
    /// A polygon with an odd number of values.
    #[error("polygon {index} has an odd number of coordinates ({len}); expected x, y pairs")]
    OddPolygon { index: usize, len: usize },
    /// A polygon with fewer than 3 vertices.
    #[error("polygon {index} has {points} point(s) ({len} values); a polygon needs at least 3 points (6 values)")]
    TooFewPoints { index: usize, points: usize, len: usize },
    /// A vertex coordinate that is not finite or too far out.
    #[error("polygon {index} coordinate {position} is {value}; expected a finite number within ±{MAX_POLYGON_COORD}")]
    BadCoordinate { index: usize, position: usize, value: f64 },
    /// An image size with a zero side, or whose `h·w` does not fit COCO's 32-bit counts.
    #[error("image size {height}x{width} is not usable for masks: sides must be > 0 and height*width < 2^32")]
    BadSize { height: u32, width: u32 },
    /// RLE counts that do not cover the image exactly.
    #[error("RLE counts sum to {sum}, expected height*width = {expected} ({height}x{width})")]
    CountsSum { sum: u64, expected: u64, height: u32, width: u32 },
    /// A malformed compressed counts string.
    #[error("compressed RLE counts string: {reason} (at byte {position})")]
    BadCompressed { position: usize, reason: String },
    /// An RLE whose size is not the one required.
    #[error("RLE size is {rle_height}x{rle_width} but the image is {height}x{width}")]
    SizeMismatch { rle_height: u32, rle_width: u32, height: u32, width: u32 },
    /// [`Rle::merge`] of nothing.
    #[error("merge needs at least one RLE")]
    EmptyMerge,
    /// Mask data of the wrong length.
    #[error("mask data has {len} bytes, expected height*width = {expected} ({height}x{width})")]
    MaskLength { len: usize, expected: usize, height: u32, width: u32 },
}

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub height: u32,
    pub width: u32,
    /// `height * width` bytes, row-major, 0 or 1.
    pub data: Vec<u8>,
}

/// Run-length encoding as COCO: column-major runs, alternating 0s and 1s, starting with a (possibly
/// empty) 0-run. Valid when the counts sum to `height * width` ([`Rle::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

/// A COCO `segmentation` field as it appears in instances / refs json.
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    /// One object as one or more polygons `[x0, y0, x1, y1, ...]` (pixel coordinates).
    Polygons(Vec<Vec<f64>>),
    /// Uncompressed RLE (`{"size": [h, w], "counts": [..numbers..]}`).
    Rle(Rle),
    /// Compressed RLE (`{"size": [h, w], "counts": "string"}`).
    CompressedRle { size: [u32; 2], counts: String },
}

fn check_size(height: u32, width: u32) -> Result<(), MaskError> {
    if height == 0 || width == 0 || (height as u64) * (width as u64) > u32::MAX as u64 {
        return Err(MaskError::BadSize { height, width });
    }
    Ok(())
}

fn json_u32(v: &serde_json::Value, what: &str) -> Result<u32, MaskError> {
    let bad = || MaskError::Json(format!("{what} must be a non-negative integer below 2^32, got {v}"));
    if let Some(u) = v.as_u64() {
        return u32::try_from(u).map_err(|_| bad());
    }
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => Ok(f as u32),
        _ => Err(bad()),
    }
}

impl Segmentation {
    /// Parses a `segmentation` json value: a list of polygons (lists of numbers), or an object with
    /// `size: [h, w]` and `counts` (a list of non-negative integers, or a compressed string).
    ///
    /// Polygon lengths are not checked here (a loader may drop bad polygons first, as mmdet does, see
    /// [`Segmentation::drop_invalid_polygons`]); [`Segmentation::to_rle`] checks them.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, MaskError> {
        match v {
            serde_json::Value::Array(polys) => {
                let mut out = Vec::with_capacity(polys.len());
                for (i, p) in polys.iter().enumerate() {
                    let arr = p.as_array().ok_or_else(|| {
                        MaskError::Json(format!(
                            "polygon {i} must be a list of numbers [x0, y0, x1, y1, ...], got {}",
                            short(p)
                        ))
                    })?;
                    let mut poly = Vec::with_capacity(arr.len());
                    for (j, c) in arr.iter().enumerate() {
                        poly.push(c.as_f64().ok_or_else(|| {
                            MaskError::Json(format!("polygon {i} value {j} is not a number: {}", short(c)))
                        })?);
                    }
                    out.push(poly);
                }
                Ok(Segmentation::Polygons(out))
            }
            serde_json::Value::Object(obj) => {
                let size = obj
                    .get("size")
                    .ok_or_else(|| MaskError::Json("RLE object has no \"size\" ([height, width])".into()))?;
                let size_arr = size
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| MaskError::Json(format!("RLE \"size\" must be [height, width], got {}", short(size))))?;
                let height = json_u32(&size_arr[0], "RLE height")?;
                let width = json_u32(&size_arr[1], "RLE width")?;
                let counts = obj
                    .get("counts")
                    .ok_or_else(|| MaskError::Json("RLE object has no \"counts\"".into()))?;
                match counts {
                    serde_json::Value::String(s) => {
                        Ok(Segmentation::CompressedRle { size: [height, width], counts: s.clone() })
                    }
                    serde_json::Value::Array(a) => {
                        let counts = a
                            .iter()
                            .enumerate()
                            .map(|(j, c)| json_u32(c, &format!("RLE count {j}")))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(Segmentation::Rle(Rle { height, width, counts }))
                    }
                    other => Err(MaskError::Json(format!(
                        "RLE \"counts\" must be a list of integers or a string, got {}",
                        short(other)
                    ))),
                }
            }
            other => Err(MaskError::Json(format!(
                "expected a list of polygons or an RLE object {{\"size\", \"counts\"}}, got {}",
                short(other)
            ))),
        }
    }

    /// Drops polygons with an odd number of values or fewer than 3 points — mmdet's `LoadAnnotations`
    /// rule (`len(p) % 2 == 0 and len(p) >= 6`). Returns how many were dropped; RLEs are left alone.
    pub fn drop_invalid_polygons(&mut self) -> usize {
        match self {
            Segmentation::Polygons(polys) => {
                let before = polys.len();
                polys.retain(|p| p.len().is_multiple_of(2) && p.len() >= 6);
                before - polys.len()
            }
            _ => 0,
        }
    }

    /// The object's RLE on an image of `height × width`, as pycocotools' `COCO.annToRLE`:
    /// polygons → `merge(frPyObjects(polys, h, w))`; uncompressed RLE → `frPyObjects(rle, h, w)`;
    /// compressed RLE → itself. An RLE's `size` must equal `[height, width]` and its counts sum to `h·w`.
    pub fn to_rle(&self, height: u32, width: u32) -> Result<Rle, MaskError> {
        check_size(height, width)?;
        match self {
            Segmentation::Polygons(polys) => polygons_to_rle(polys, height, width),
            Segmentation::Rle(rle) => {
                same_size(rle.height, rle.width, height, width)?;
                rle.validate()?;
                Ok(rle.clone())
            }
            Segmentation::CompressedRle { size, counts } => {
                same_size(size[0], size[1], height, width)?;
                Rle::from_compressed(size[0], size[1], counts)
            }
        }
    }

    /// The object's binary mask on an image of `height × width` (see [`Segmentation::to_rle`]).
    pub fn to_mask(&self, height: u32, width: u32) -> Result<Mask, MaskError> {
        Ok(self.to_rle(height, width)?.decode())
    }
}

fn same_size(rh: u32, rw: u32, height: u32, width: u32) -> Result<(), MaskError> {
    if rh != height || rw != width {
        return Err(MaskError::SizeMismatch { rle_height: rh, rle_width: rw, height, width });
    }
    Ok(())
}

/// A json value for an error message, cut to a readable length.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

impl Mask {
    /// An all-zero mask.
    pub fn zeros(height: u32, width: u32) -> Mask {
        Mask { height, width, data: vec![0; height as usize * width as usize] }
    }

    /// A mask from row-major bytes (any nonzero byte is foreground), checking the length.
    pub fn new(height: u32, width: u32, data: Vec<u8>) -> Result<Mask, MaskError> {
        let expected = height as usize * width as usize;
        if data.len() != expected {
            return Err(MaskError::MaskLength { len: data.len(), expected, height, width });
        }
        Ok(Mask { height, width, data })
    }

    /// Number of foreground (nonzero) pixels.
    pub fn count_ones(&self) -> u64 {
        self.data.iter().filter(|&&b| b != 0).count() as u64
    }

    /// The pixel at row `y`, column `x`.
    pub fn get(&self, y: u32, x: u32) -> u8 {
        self.data[y as usize * self.width as usize + x as usize]
    }
}

impl Rle {
    /// Encodes a mask as pycocotools `encode` (column-major runs). Any nonzero byte counts as 1
    /// (pycocotools would start a new run at every change of byte value).
    ///
    /// # Panics
    /// If `mask.data.len() != height * width` (build masks with [`Mask::new`] to check this).
    pub fn encode(mask: &Mask) -> Rle {
        let (h, w) = (mask.height as usize, mask.width as usize);
        assert_eq!(mask.data.len(), h * w, "Mask data length must be height*width");
        let mut counts = Vec::new();
        let mut current = false;
        let mut run: u32 = 0;
        for x in 0..w {
            for y in 0..h {
                let v = mask.data[y * w + x] != 0;
                if v != current {
                    counts.push(run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle { height: mask.height, width: mask.width, counts }
    }

    /// Decodes to a row-major 0/1 mask. Counts beyond `h·w` are ignored and missing pixels are 0; use
    /// [`Rle::try_decode`] (or [`Rle::validate`]) to refuse such RLEs.
    pub fn decode(&self) -> Mask {
        let (h, w) = (self.height as usize, self.width as usize);
        let total = h * w;
        let mut data = vec![0u8; total];
        let mut pos = 0usize;
        let mut value = 0u8;
        for &c in &self.counts {
            let end = (pos + c as usize).min(total);
            if value == 1 {
                for idx in pos..end {
                    let (x, y) = (idx / h, idx % h);
                    data[y * w + x] = 1;
                }
            }
            pos = end;
            value ^= 1;
        }
        Mask { height: self.height, width: self.width, data }
    }

    /// [`Rle::decode`] after [`Rle::validate`].
    pub fn try_decode(&self) -> Result<Mask, MaskError> {
        self.validate()?;
        Ok(self.decode())
    }

    /// Parses COCO's compressed counts string (pycocotools `_frString`) and checks that the counts sum
    /// to `height * width`.
    pub fn from_compressed(height: u32, width: u32, counts: &str) -> Result<Rle, MaskError> {
        let bytes = counts.as_bytes();
        let mut out: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        while p < bytes.len() {
            let start = p;
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&ch) = bytes.get(p) else {
                    return Err(MaskError::BadCompressed {
                        position: p,
                        reason: format!("string ends inside the count that starts at byte {start}"),
                    });
                };
                if !(48..=111).contains(&ch) {
                    return Err(MaskError::BadCompressed {
                        position: p,
                        reason: format!("character {:?} is outside the alphabet '0'..='o' (ASCII 48..=111)", ch as char),
                    });
                }
                if k >= 7 {
                    return Err(MaskError::BadCompressed {
                        position: p,
                        reason: format!("count starting at byte {start} is longer than 7 characters (exceeds 32 bits)"),
                    });
                }
                let c = (ch - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = out.len();
            if m > 2 {
                x += out[m - 2] as i64;
            }
            let value = u32::try_from(x).map_err(|_| MaskError::BadCompressed {
                position: start,
                reason: format!("count {m} decodes to {x}, outside 0..2^32"),
            })?;
            out.push(value);
        }
        let rle = Rle { height, width, counts: out };
        rle.validate()?;
        Ok(rle)
    }

    /// The compressed counts string (same as `self.to_string()`).
    pub fn to_compressed(&self) -> String {
        self.to_string()
    }

    /// `{"size": [h, w], "counts": "<compressed>"}`, as pycocotools writes RLEs (counts as text).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "size": [self.height, self.width], "counts": self.to_string() })
    }

    /// Checks that the counts sum to `height * width`.
    pub fn validate(&self) -> Result<(), MaskError> {
        let sum: u64 = self.counts.iter().map(|&c| c as u64).sum();
        let expected = self.height as u64 * self.width as u64;
        if sum != expected {
            return Err(MaskError::CountsSum { sum, expected, height: self.height, width: self.width });
        }
        Ok(())
    }

    /// Number of foreground pixels (pycocotools `area`).
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum()
    }

    /// `[x, y, w, h]` as pycocotools 2.0.11 `toBbox` (empty → all zeros).
    pub fn bbox(&self) -> [f64; 4] {
        let (h, w) = (self.height, self.width);
        let m = self.counts.len() / 2 * 2;
        if m == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut cc: u32 = 0;
        for (j, &c) in self.counts[..m].iter().enumerate() {
            let start = cc;
            cc = cc.wrapping_add(c);
            if j % 2 == 0 || c == 0 {
                continue;
            }
            // h > 0 here whenever there is a nonzero 1-run in a valid RLE; guard the division anyway.
            let hh = h.max(1);
            let (y_start, x_start) = (start % hh, start / hh);
            let last = cc.wrapping_sub(1);
            let (y_end, x_end) = (last % hh, last / hh);
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                ys = 0;
                ye = h.wrapping_sub(1);
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// Union (`intersect == false`) or intersection of RLEs of one size, as pycocotools `merge`
    /// (the result has maximal runs). Every input must be valid ([`Rle::validate`]).
    pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle, MaskError> {
        let first = rles.first().ok_or(MaskError::EmptyMerge)?;
        for r in rles {
            same_size(r.height, r.width, first.height, first.width)?;
            r.validate()?;
        }
        if first.height == 0 || first.width == 0 {
            // A 0-pixel image: nothing to merge (encoded as pycocotools encodes it).
            return Ok(Rle { height: first.height, width: first.width, counts: vec![0] });
        }
        let mut acc = first.counts.clone();
        for b in &rles[1..] {
            acc = merge_two(&acc, &b.counts, intersect);
        }
        Ok(Rle { height: first.height, width: first.width, counts: acc })
    }
}

/// One step of `rleMerge`: walks both run lists together, emitting a run whenever the combined value
/// changes or both lists are exhausted.
fn merge_two(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut ca, mut cb) = (a[0], b[0]);
    let (mut ia, mut ib) = (1usize, 1usize);
    let (mut va, mut vb, mut v) = (false, false, false);
    let mut cc: u32 = 0;
    loop {
        let c = ca.min(cb);
        cc += c;
        ca -= c;
        if ca == 0 && ia < a.len() {
            ca = a[ia];
            ia += 1;
            va = !va;
        }
        cb -= c;
        if cb == 0 && ib < b.len() {
            cb = b[ib];
            ib += 1;
            vb = !vb;
        }
        let remaining = ca as u64 + cb as u64;
        let prev = v;
        v = if intersect { va && vb } else { va || vb };
        if v != prev || remaining == 0 {
            out.push(cc);
            cc = 0;
        }
        if remaining == 0 {
            return out;
        }
    }
}

/// COCO's compressed counts string (pycocotools `encode(...)['counts']`, as text).
impl fmt::Display for Rle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut ch = (x & 0x1f) as u8;
                x >>= 5;
                let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    ch |= 0x20;
                }
                s.push((ch + 48) as char);
                if !more {
                    break;
                }
            }
        }
        f.write_str(&s)
    }
}

fn check_polygon(index: usize, poly: &[f64]) -> Result<(), MaskError> {
    if !poly.len().is_multiple_of(2) {
        return Err(MaskError::OddPolygon { index, len: poly.len() });
    }
    if poly.len() < 6 {
        return Err(MaskError::TooFewPoints { index, points: poly.len() / 2, len: poly.len() });
    }
    for (position, &value) in poly.iter().enumerate() {
        if !value.is_finite() || value.abs() > MAX_POLYGON_COORD {
            return Err(MaskError::BadCoordinate { index, position, value });
        }
    }
    Ok(())
}

/// Rasterises one polygon `[x0, y0, x1, y1, ...]` (at least 3 points) as pycocotools
/// `frPyObjects([poly], h, w)[0]`.
pub fn polygon_to_rle(poly: &[f64], height: u32, width: u32) -> Result<Rle, MaskError> {
    check_size(height, width)?;
    check_polygon(0, poly)?;
    Ok(rasterize(poly, height, width))
}

/// Several polygons of one object, rasterised and merged with union: `merge(frPyObjects(polys, h, w))`.
pub fn polygons_to_rle(polys: &[Vec<f64>], height: u32, width: u32) -> Result<Rle, MaskError> {
    check_size(height, width)?;
    if polys.is_empty() {
        return Err(MaskError::NoPolygons);
    }
    for (i, p) in polys.iter().enumerate() {
        check_polygon(i, p)?;
    }
    let rles: Vec<Rle> = polys.iter().map(|p| rasterize(p, height, width)).collect();
    Rle::merge(&rles, false)
}

/// A box `[x, y, w, h]` as pycocotools `frBbox` (the polygon of its four corners); this is also what
/// `frPyObjects` does with a 4-value "polygon".
pub fn bbox_to_rle(bbox: [f64; 4], height: u32, width: u32) -> Result<Rle, MaskError> {
    check_size(height, width)?;
    let [x, y, bw, bh] = bbox;
    let (xe, ye) = (x + bw, y + bh);
    let poly = [x, y, x, ye, xe, ye, xe, y];
    check_polygon(0, &poly)?;
    Ok(rasterize(&poly, height, width))
}

/// `rleFrPoly` for a checked polygon (even length ≥ 2, finite, within range) and a checked size.
fn rasterize(xy: &[f64], height: u32, width: u32) -> Rle {
    const SCALE: f64 = 5.0;
    let k = xy.len() / 2;
    // C's (int) cast: truncation toward zero (in range thanks to MAX_POLYGON_COORD).
    let vx: Vec<i64> = (0..=k).map(|j| (SCALE * xy[(j % k) * 2] + 0.5) as i32 as i64).collect();
    let vy: Vec<i64> = (0..=k).map(|j| (SCALE * xy[(j % k) * 2 + 1] + 0.5) as i32 as i64).collect();

    let (h, w) = (height as i64, width as i64);
    let mut toggles: Vec<u32> = Vec::new();
    let mut prev: Option<(i64, i64)> = None;
    // A point of the dense outline; where the column changes, record a boundary crossing.
    let mut visit = |u: i64, v: i64| {
        if let Some((pu, pv)) = prev {
            if u != pu {
                let xd = (if u < pu { u } else { u - 1 }) as f64;
                let xd = (xd + 0.5) / SCALE - 0.5;
                if xd.floor() == xd && xd >= 0.0 && xd <= (w - 1) as f64 {
                    let yd = v.min(pv) as f64;
                    let mut yd = (yd + 0.5) / SCALE - 0.5;
                    if yd < 0.0 {
                        yd = 0.0;
                    } else if yd > h as f64 {
                        yd = h as f64;
                    }
                    let yd = yd.ceil();
                    toggles.push((xd as i64 * h + yd as i64) as u32);
                }
            }
        }
        prev = Some((u, v));
    };
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (vx[j], vx[j + 1], vy[j], vy[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx == 0 && dy == 0 {
            // A repeated vertex: C computes 0/0 here; the point's column equals its neighbours', so it
            // never takes part in a crossing and its row is irrelevant.
            visit(xs, ys);
        } else if dx >= dy {
            let s = (ye - ys) as f64 / dx as f64;
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                visit(t + xs, (ys as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                visit((xs as f64 + s * t as f64 + 0.5) as i32 as i64, t + ys);
            }
        }
    }
    toggles.push((h * w) as u32);
    toggles.sort_unstable();
    // Differences between consecutive toggle positions; a zero difference (two toggles at one
    // position) cancels: it is skipped and the following difference joins the previous run.
    let mut diffs = Vec::with_capacity(toggles.len());
    let mut p = 0u32;
    for &t in &toggles {
        diffs.push(t - p);
        p = t;
    }
    let mut counts: Vec<u32> = Vec::with_capacity(diffs.len());
    counts.push(diffs[0]);
    let mut j = 1;
    while j < diffs.len() {
        if diffs[j] > 0 {
            counts.push(diffs[j]);
            j += 1;
        } else {
            j += 1;
            if j < diffs.len() {
                *counts.last_mut().expect("counts is never empty") += diffs[j];
                j += 1;
            }
        }
    }
    Rle { height, width, counts }
}

/// Intersection over union as pycocotools `iou([a], [b], [iscrowd])[0, 0]`. With `iscrowd` (a property
/// of `b`, the ground truth) the denominator is `a`'s area instead of the union. Boxes that do not
/// overlap give 0 without walking the runs (so two empty masks give 0); RLEs of different sizes give −1
/// when their boxes overlap, 0 otherwise.
pub fn iou(a: &Rle, b: &Rle, iscrowd: bool) -> f64 {
    let (da, gb) = (a.bbox(), b.bbox());
    if bbox_iou(da, gb, iscrowd) <= 0.0 {
        return 0.0;
    }
    if a.height != b.height || a.width != b.width {
        return -1.0;
    }
    if a.counts.is_empty() || b.counts.is_empty() {
        return 0.0;
    }
    let (mut ca, mut cb) = (a.counts[0], b.counts[0]);
    let (mut ia, mut ib) = (1usize, 1usize);
    let (mut va, mut vb) = (false, false);
    let (mut inter, mut union) = (0u64, 0u64);
    loop {
        let c = ca.min(cb);
        if va || vb {
            union += c as u64;
            if va && vb {
                inter += c as u64;
            }
        }
        ca -= c;
        if ca == 0 && ia < a.counts.len() {
            ca = a.counts[ia];
            ia += 1;
            va = !va;
        }
        cb -= c;
        if cb == 0 && ib < b.counts.len() {
            cb = b.counts[ib];
            ib += 1;
            vb = !vb;
        }
        if ca as u64 + cb as u64 == 0 {
            break;
        }
    }
    if inter == 0 {
        return 0.0;
    }
    let denom = if iscrowd { a.area() } else { union };
    inter as f64 / denom as f64
}

/// pycocotools `bbIou` for one pair of `[x, y, w, h]` boxes (`iscrowd`: divide by `dt`'s area).
pub fn bbox_iou(dt: [f64; 4], gt: [f64; 4], iscrowd: bool) -> f64 {
    let ga = gt[2] * gt[3];
    let da = dt[2] * dt[3];
    let w = (dt[2] + dt[0]).min(gt[2] + gt[0]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[3] + dt[1]).min(gt[3] + gt[1]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if iscrowd { da } else { da + ga - i };
    i / u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip_small() {
        let rle = Rle { height: 3, width: 4, counts: vec![0, 2, 5, 1, 4] };
        let s = rle.to_string();
        assert_eq!(Rle::from_compressed(3, 4, &s).unwrap(), rle);
    }

    #[test]
    fn encode_decode_round_trip() {
        let data: Vec<u8> = (0..35u32).map(|i| ((i * 7 + i / 3) % 3 == 0) as u8).collect();
        let m = Mask::new(5, 7, data).unwrap();
        let rle = Rle::encode(&m);
        rle.validate().unwrap();
        assert_eq!(rle.decode(), m);
        assert_eq!(rle.area(), m.count_ones());
    }

    #[test]
    fn zero_sized_images() {
        let m = Mask::zeros(0, 4);
        let rle = Rle::encode(&m);
        assert_eq!(rle.counts, vec![0]);
        rle.validate().unwrap();
        assert_eq!(rle.decode(), m);
        assert_eq!(rle.bbox(), [0.0; 4]);
        let empty = Rle { height: 0, width: 4, counts: vec![] };
        assert_eq!(Rle::merge(&[rle.clone(), empty.clone()], false).unwrap().counts, vec![0]);
        assert_eq!(iou(&rle, &empty, false), 0.0);
        assert_eq!(Rle::from_compressed(0, 4, "").unwrap(), empty);
    }

    #[test]
    fn merge_union_and_intersection() {
        let a = Mask::new(2, 3, vec![1, 0, 1, 0, 1, 0]).unwrap();
        let b = Mask::new(2, 3, vec![1, 1, 0, 0, 0, 1]).unwrap();
        let (ra, rb) = (Rle::encode(&a), Rle::encode(&b));
        let u = Rle::merge(&[ra.clone(), rb.clone()], false).unwrap().decode();
        let i = Rle::merge(&[ra, rb], true).unwrap().decode();
        assert_eq!(u.data, vec![1, 1, 1, 0, 1, 1]);
        assert_eq!(i.data, vec![1, 0, 0, 0, 0, 0]);
    }
}
