//! `flmm plot`: draws a metric of a JSON-lines training log as a PNG line chart (no fonts needed:
//! labels use an embedded 8×8 bitmap font).

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use std::path::Path;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;
const MARGIN_LEFT: u32 = 90;
const MARGIN_RIGHT: u32 = 20;
const MARGIN_TOP: u32 = 36;
const MARGIN_BOTTOM: u32 = 50;
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([220, 220, 220]);
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);

/// `(step, value)` pairs of `key` from a metrics log, in file order.
pub fn series(records: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Renders `points` as a line chart titled `title`; the y axis is logarithmic when `log_y`.
pub fn render(points: &[(f64, f64)], title: &str, log_y: bool) -> Result<RgbImage, String> {
    if points.len() < 2 {
        return Err(format!("need at least 2 points to plot `{title}`, got {}", points.len()));
    }
    if log_y && points.iter().any(|(_, v)| *v <= 0.0) {
        return Err("a logarithmic axis needs positive values (use --linear)".into());
    }
    let ty = |v: f64| if log_y { v.log10() } else { v };
    let (x0, x1) = (points[0].0, points.last().map(|p| p.0).unwrap_or(1.0));
    let (mut y0, mut y1) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| (lo.min(ty(*v)), hi.max(ty(*v))));
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let (pw, ph) = ((WIDTH - MARGIN_LEFT - MARGIN_RIGHT) as f64, (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) as f64);
    let px = |x: f64| MARGIN_LEFT as f64 + (x - x0) / (x1 - x0).max(1e-12) * pw;
    let py = |y: f64| MARGIN_TOP as f64 + (1.0 - (ty(y) - y0) / (y1 - y0)) * ph;
    for i in 0..=4 {
        let frac = i as f64 / 4.0;
        let y = MARGIN_TOP as f64 + frac * ph;
        line(&mut img, (MARGIN_LEFT as f64, y), (MARGIN_LEFT as f64 + pw, y), GREY);
        let value = y1 - frac * (y1 - y0);
        let value = if log_y { 10f64.powf(value) } else { value };
        text(&mut img, 4, y as i32 - 4, &format!("{value:.3e}"));
        let x = MARGIN_LEFT as f64 + frac * pw;
        text(&mut img, x as i32 - 16, (HEIGHT - MARGIN_BOTTOM + 8) as i32, &format!("{:.0}", x0 + frac * (x1 - x0)));
    }
    line(&mut img, (MARGIN_LEFT as f64, MARGIN_TOP as f64), (MARGIN_LEFT as f64, MARGIN_TOP as f64 + ph), BLACK);
    line(&mut img, (MARGIN_LEFT as f64, MARGIN_TOP as f64 + ph), (MARGIN_LEFT as f64 + pw, MARGIN_TOP as f64 + ph), BLACK);
    for pair in points.windows(2) {
        line(&mut img, (px(pair[0].0), py(pair[0].1)), (px(pair[1].0), py(pair[1].1)), BLUE);
    }
    text(&mut img, MARGIN_LEFT as i32, 12, title);
    text(&mut img, (WIDTH / 2) as i32 - 16, (HEIGHT - 20) as i32, "step");
    Ok(img)
}

/// Reads `metrics`, plots `key` and writes the PNG to `out` atomically.
pub fn plot_file(metrics: &Path, key: &str, out: &Path, log_y: bool) -> anyhow::Result<usize> {
    let records = crate::train::metrics_log::read(metrics).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", metrics.display()))?;
    let points = series(&records, key);
    let img = render(&points, &format!("{key} ({})", metrics.display()), log_y).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::png_out::save_png(&image::DynamicImage::ImageRgb8(img), out)?;
    Ok(points.len())
}

fn line(img: &mut RgbImage, (xa, ya): (f64, f64), (xb, yb): (f64, f64), color: Rgb<u8>) {
    let steps = (xb - xa).abs().max((yb - ya).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (xa + t * (xb - xa), ya + t * (yb - ya));
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}

fn text(img: &mut RgbImage, x: i32, y: i32, s: &str) {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + i as i32 * 8 + col, y + row as i32);
                    if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                        img.put_pixel(px as u32, py as u32, BLACK);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_decreasing_curve_into_the_plot_area() {
        let pts: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect();
        let img = render(&pts, "loss", true).unwrap();
        let blue = |x: u32, y0: u32, y1: u32| (y0..y1).any(|y| *img.get_pixel(x, y) == BLUE);
        // The curve starts high on the left and ends low on the right.
        let mid = MARGIN_TOP + (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / 2;
        assert!(blue(MARGIN_LEFT + 1, MARGIN_TOP, mid));
        assert!(blue(WIDTH - MARGIN_RIGHT - 1, mid, HEIGHT - MARGIN_BOTTOM + 1));
        assert!(render(&pts[..1], "loss", true).is_err());
    }
}
