//! Writing pictures: PNG-encode in memory, then replace the file atomically.

use std::path::Path;

/// Encodes `img` as PNG and writes it to `path` atomically.
pub fn save_png(img: &image::DynamicImage, path: &Path) -> anyhow::Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    flmm_nn::fsutil::write_atomic(path, &png)?;
    Ok(())
}
