//! Loading user images (PNG, JPEG) as 8-bit RGB, with errors that name the file and say what is wrong.
//!
//! Size limits are checked from the image header *before* any pixel buffer is allocated, so a hostile
//! or accidental 20000×20000 file is refused cheaply. The defaults ([`ImageLimits::default`]) are
//! 16384 pixels per side and 100 megapixels in total — far above any backbone's input (≤ 1024 px after
//! resizing) yet small enough that decoding stays well below a gigabyte (≤ 8 bytes per pixel for 16-bit
//! RGBA PNGs, 3 bytes per pixel after conversion).
//!
//! Colour handling follows PIL's `Image.convert("RGB")`: greyscale is replicated, palettes are
//! expanded, alpha is dropped (not composited). EXIF orientation is not applied (neither do the
//! Hugging Face processors). Note that JPEG decoders differ slightly in their IDCT/chroma upsampling,
//! so a JPEG may decode to pixels that differ by a few levels from PIL's libjpeg; PNG is exact.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::{Path, PathBuf};

use image::{ImageError, ImageFormat, ImageReader, Limits, RgbImage};

/// Upper bounds on the images [`load_rgb_image_with`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width and height, in pixels.
    pub max_side: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 16384 pixels per side, 100 megapixels in total.
    fn default() -> Self {
        ImageLimits { max_side: 16_384, max_pixels: 100_000_000 }
    }
}

/// Why an image could not be loaded. Every variant names the input (a path, or the label given to
/// [`decode_rgb_image`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageLoadError {
    /// The file does not exist.
    #[error("image file not found: {}", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read image file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a recognised image format.
    #[error("{}: not a PNG or JPEG image (unrecognised file signature)", path.display())]
    UnknownFormat {
        /// The input.
        path: PathBuf,
    },
    /// A recognised image format this build cannot decode.
    #[error("{}: {format} images are not supported (expected PNG or JPEG)", path.display())]
    UnsupportedFormat {
        /// The input.
        path: PathBuf,
        /// The detected format, e.g. `Gif`.
        format: String,
    },
    /// The header claims an image larger than the limits.
    #[error(
        "{}: image is {width}x{height} ({pixels} pixels), larger than the limit of {max_side} pixels per side \
         and {max_pixels} pixels in total",
        path.display(), pixels = *width as u64 * *height as u64
    )]
    TooLarge {
        /// The input.
        path: PathBuf,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The side limit in force.
        max_side: u32,
        /// The pixel-count limit in force.
        max_pixels: u64,
    },
    /// The image has a zero width or height.
    #[error("{}: image has no pixels ({width}x{height})", path.display())]
    Empty {
        /// The input.
        path: PathBuf,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// The data is corrupt or truncated.
    #[error("{}: corrupt or truncated image data: {detail}", path.display())]
    Corrupt {
        /// The input.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
}

/// Load a PNG or JPEG file as 8-bit RGB with the default [`ImageLimits`].
pub fn load_rgb_image(path: impl AsRef<Path>) -> Result<RgbImage, ImageLoadError> {
    load_rgb_image_with(path, &ImageLimits::default())
}

/// Load a PNG or JPEG file as 8-bit RGB, refusing images beyond `limits` before decoding them.
pub fn load_rgb_image_with(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<RgbImage, ImageLoadError> {
    let path = path.as_ref();
    let open = || -> Result<BufReader<File>, ImageLoadError> {
        File::open(path).map(BufReader::new).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageLoadError::NotFound { path: path.to_path_buf() },
            _ => ImageLoadError::Io { path: path.to_path_buf(), source },
        })
    };
    decode_checked(path, limits, open)
}

/// Decode PNG or JPEG bytes (e.g. an upload) as 8-bit RGB; `label` names the input in errors.
pub fn decode_rgb_image(bytes: &[u8], label: &str, limits: &ImageLimits) -> Result<RgbImage, ImageLoadError> {
    decode_checked(Path::new(label), limits, || Ok(Cursor::new(bytes)))
}

fn decode_checked<R, F>(path: &Path, limits: &ImageLimits, open: F) -> Result<RgbImage, ImageLoadError>
where
    R: BufRead + Seek,
    F: Fn() -> Result<R, ImageLoadError>,
{
    let reader = |r: R| -> Result<ImageReader<R>, ImageLoadError> {
        let reader = ImageReader::new(r)
            .with_guessed_format()
            .map_err(|source| ImageLoadError::Io { path: path.to_path_buf(), source })?;
        match reader.format() {
            None => Err(ImageLoadError::UnknownFormat { path: path.to_path_buf() }),
            Some(ImageFormat::Png | ImageFormat::Jpeg) => Ok(reader),
            Some(other) => {
                Err(ImageLoadError::UnsupportedFormat { path: path.to_path_buf(), format: format!("{other:?}") })
            }
        }
    };
    let corrupt = |e: ImageError| match e {
        ImageError::Unsupported(u) => {
            ImageLoadError::UnsupportedFormat { path: path.to_path_buf(), format: u.to_string() }
        }
        other => ImageLoadError::Corrupt { path: path.to_path_buf(), detail: other.to_string() },
    };

    // 1. Header only: dimensions, checked against the limits before any pixel allocation.
    let (width, height) = reader(open()?)?.into_dimensions().map_err(corrupt)?;
    if width > limits.max_side || height > limits.max_side || width as u64 * height as u64 > limits.max_pixels {
        return Err(ImageLoadError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    if width == 0 || height == 0 {
        return Err(ImageLoadError::Empty { path: path.to_path_buf(), width, height });
    }

    // 2. Decode, with the same limits enforced by the decoder as a second guard.
    let mut r = reader(open()?)?;
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    r.limits(lim);
    let img = r.decode().map_err(corrupt)?;
    Ok(img.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).expect("encode png");
        out.into_inner()
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn push_chunk(v: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(&chunk);
        v.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }

    /// A PNG claiming `w`×`h` RGB8 with no pixel data at all: signature, IHDR, an empty IDAT, IEND.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolour, deflate, adaptive, no interlace
        push_chunk(&mut v, b"IHDR", &ihdr);
        push_chunk(&mut v, b"IDAT", &[]);
        push_chunk(&mut v, b"IEND", &[]);
        v
    }

    #[test]
    fn one_pixel_png_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("one.png");
        std::fs::write(&p, png_bytes(&RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3])))).unwrap();
        let img = load_rgb_image(&p).unwrap();
        assert_eq!(img.dimensions(), (1, 1));
        assert_eq!(img.get_pixel(0, 0).0, [1, 2, 3]);
    }

    #[test]
    fn grey_and_alpha_convert_like_pil() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("la.png");
        let la = image::GrayAlphaImage::from_pixel(2, 1, image::LumaA([77, 10]));
        la.save(&p).unwrap();
        let img = load_rgb_image(&p).unwrap();
        assert!(img.pixels().all(|px| px.0 == [77, 77, 77]));
    }

    #[test]
    fn missing_file_is_named() {
        let err = load_rgb_image("/definitely/not/here.png").unwrap_err();
        assert!(matches!(err, ImageLoadError::NotFound { .. }));
        assert!(err.to_string().contains("/definitely/not/here.png"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_an_unknown_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("noise.png");
        std::fs::write(&p, b"this is not an image at all, just some text").unwrap();
        let err = load_rgb_image(&p).unwrap_err();
        assert!(matches!(err, ImageLoadError::UnknownFormat { .. }), "{err}");
        assert!(err.to_string().contains("noise.png"), "{err}");
    }

    #[test]
    fn unsupported_format_is_reported() {
        let err =
            decode_rgb_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00", "anim.gif", &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageLoadError::UnsupportedFormat { .. }), "{err}");
        assert!(err.to_string().contains("anim.gif"), "{err}");
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.png");
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 7 + y) as u8, (y * 13) as u8, (x ^ y) as u8]));
        let bytes = png_bytes(&img);
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_rgb_image(&p).unwrap_err();
        assert!(matches!(err, ImageLoadError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("cut.png"), "{err}");
        // header only, no IDAT: also corrupt, not a panic
        let err = decode_rgb_image(&png_header_only(4, 4), "hdr.png", &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageLoadError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn huge_image_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        std::fs::write(&p, png_header_only(20_000, 20_000)).unwrap();
        let err = load_rgb_image(&p).unwrap_err();
        match &err {
            ImageLoadError::TooLarge { width, height, .. } => assert_eq!((*width, *height), (20_000, 20_000)),
            other => panic!("expected TooLarge, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("huge.png") && msg.contains("20000x20000") && msg.contains("16384"), "{msg}");
        // within the side limit but over the pixel budget
        let small = ImageLimits { max_side: 16_384, max_pixels: 1_000 };
        let err = decode_rgb_image(&png_header_only(100, 100), "mid.png", &small).unwrap_err();
        assert!(matches!(err, ImageLoadError::TooLarge { .. }), "{err}");
    }
}
