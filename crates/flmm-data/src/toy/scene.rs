//! Toy scenes: 1–5 flat-coloured shapes on a lightly textured background, with exact instance masks.
//!
//! A scene is a pure function of `(seed, index, config)`. Objects are placed one after another; a later
//! object may overlap (and so occlude) an earlier one. Each object's [`ToyObject::mask`] is its visible
//! pixels after occlusion, exactly the pixels [`render`] paints in its colour. Placement rejects objects
//! that would leave any object with less than half of its own shape visible, and objects of the same
//! colour never overlap or touch (their boundary would be invisible).

use flmm_nn::rng::Rng;
use image::{Rgb, RgbImage};

/// The shapes of the toy world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An upward-pointing triangle.
    Triangle,
    /// A plus-shaped cross.
    Cross,
}

/// The colours of the toy world (saturated, far from every background).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
}

/// Object sizes: the two ranges of extents do not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// Extent 6–9 % of the shorter image side.
    Small,
    /// Extent 14–19 % of the shorter image side.
    Large,
}

/// Scene backgrounds: a base colour with deterministic per-pixel noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    /// Near black.
    Dark,
    /// Near white.
    Light,
    /// Mid grey.
    Grey,
    /// Pale brown.
    Beige,
}

impl Shape {
    /// All shapes, in category order (COCO category id = position + 1).
    pub const ALL: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];

    /// Singular noun.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
        }
    }

    /// Plural noun.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Cross => "crosses",
        }
    }

    /// COCO category id of the shape (1–4).
    pub fn category_id(self) -> i64 {
        Shape::ALL.iter().position(|&s| s == self).unwrap() as i64 + 1
    }

    /// Whether the image pixel `(x, y)` of a shape of this kind is painted in the darker shade of its
    /// colour: each shape has its own fill pattern, anchored to the image grid (circles solid, squares
    /// in horizontal stripes, triangles in vertical stripes, crosses in a checker), two pixels per band.
    ///
    /// Why: like real object categories, which are told apart by their surface as much as by their
    /// outline, a shape is then recognizable from any of its patches. The toy VLM's tiny ViT (patch 8)
    /// did not learn outlines alone from image-level labels within the toy budget (docs/toy.md).
    pub fn shaded(self, x: u32, y: u32) -> bool {
        match self {
            Shape::Circle => false,
            Shape::Square => (y / 2) % 2 == 1,
            Shape::Triangle => (x / 2) % 2 == 1,
            Shape::Cross => (x / 2 + y / 2) % 2 == 1,
        }
    }

    /// Whether the point `(dx, dy)` relative to the centre lies inside the shape of extent `e`.
    fn contains(self, dx: f32, dy: f32, e: f32) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= e * e,
            Shape::Square => dx.abs() <= 0.85 * e && dy.abs() <= 0.85 * e,
            Shape::Triangle => dy <= 0.8 * e && dy >= -e && dx.abs() <= (dy + e) / 1.8,
            Shape::Cross => (dx.abs() <= 0.35 * e && dy.abs() <= e) || (dy.abs() <= 0.35 * e && dx.abs() <= e),
        }
    }
}

impl Colour {
    /// All colours.
    pub const ALL: [Colour; 6] =
        [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange];

    /// The colour word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The darker shade of the colour used by the fill patterns (60 % of [`Colour::rgb`]).
    pub fn shade(self) -> [u8; 3] {
        self.rgb().map(|c| (c as u32 * 3 / 5) as u8)
    }

    /// The colour's bright RGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 180, 50],
            Colour::Blue => [40, 70, 230],
            Colour::Yellow => [240, 220, 20],
            Colour::Purple => [150, 40, 190],
            Colour::Orange => [250, 140, 0],
        }
    }
}

impl Size {
    /// The size word.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

impl Background {
    /// All backgrounds.
    pub const ALL: [Background; 4] = [Background::Dark, Background::Light, Background::Grey, Background::Beige];

    /// The adjective used in narratives ("on a dark background").
    pub fn name(self) -> &'static str {
        match self {
            Background::Dark => "dark",
            Background::Light => "light",
            Background::Grey => "grey",
            Background::Beige => "beige",
        }
    }

    /// Base RGB before noise.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::Dark => [28, 28, 36],
            Background::Light => [232, 232, 226],
            Background::Grey => [128, 128, 128],
            Background::Beige => [214, 196, 160],
        }
    }
}

/// Scene generation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToyConfig {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Fewest objects per scene (≥ 1).
    pub min_objects: usize,
    /// Most objects per scene.
    pub max_objects: usize,
}

impl Default for ToyConfig {
    /// 128×128, 1–5 objects.
    fn default() -> Self {
        ToyConfig { width: 128, height: 128, min_objects: 1, max_objects: 5 }
    }
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyObject {
    /// Its shape.
    pub shape: Shape,
    /// Its colour.
    pub colour: Colour,
    /// Its size class.
    pub size: Size,
    /// Centre `(x, y)` in pixels.
    pub center: (f32, f32),
    /// Half-size of the shape in pixels (radius of a circle).
    pub extent: f32,
    /// Visible pixels after occlusion by later objects: row-major, 0/1, `width × height`.
    pub mask: Vec<u8>,
}

impl ToyObject {
    /// The RGB value of the object at image pixel `(x, y)`: its colour, or the colour's shade where its
    /// shape's fill pattern says so ([`Shape::shaded`]).
    pub fn paint(&self, x: u32, y: u32) -> [u8; 3] {
        if self.shape.shaded(x, y) {
            self.colour.shade()
        } else {
            self.colour.rgb()
        }
    }

    /// Number of visible pixels.
    pub fn area(&self) -> u64 {
        self.mask.iter().map(|&v| v as u64).sum()
    }
}

/// A generated scene.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyScene {
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Background kind.
    pub background: Background,
    /// Seed of the background noise.
    pub noise_seed: u64,
    /// Objects in painting order (later ones on top).
    pub objects: Vec<ToyObject>,
}

impl ToyScene {
    /// Background pixels (those of no object): row-major 0/1.
    pub fn background_mask(&self) -> Vec<u8> {
        let mut bg = vec![1u8; (self.width * self.height) as usize];
        for o in &self.objects {
            for (b, &m) in bg.iter_mut().zip(&o.mask) {
                if m != 0 {
                    *b = 0;
                }
            }
        }
        bg
    }
}

/// Spatial relation of object `a` to object `b` (by centres, dominant axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// `a` is left of `b`.
    LeftOf,
    /// `a` is right of `b`.
    RightOf,
    /// `a` is above `b`.
    Above,
    /// `a` is below `b`.
    Below,
}

impl Relation {
    /// The words ("left of", "above", ...).
    pub fn words(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }
}

/// The relation of `a` to `b`: the axis along which their centres differ more, if that difference is at
/// least 4 px and at least twice the other axis' (so every relation is clear-cut); otherwise `None`.
pub fn relation(a: &ToyObject, b: &ToyObject) -> Option<Relation> {
    let dx = b.center.0 - a.center.0;
    let dy = b.center.1 - a.center.1;
    if dx.abs() >= 4.0 && dx.abs() >= 2.0 * dy.abs() {
        Some(if dx > 0.0 { Relation::LeftOf } else { Relation::RightOf })
    } else if dy.abs() >= 4.0 && dy.abs() >= 2.0 * dx.abs() {
        Some(if dy > 0.0 { Relation::Above } else { Relation::Below })
    } else {
        None
    }
}

fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn full_mask(shape: Shape, center: (f32, f32), e: f32, w: u32, h: u32) -> Vec<u8> {
    let mut m = vec![0u8; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 + 0.5 - center.0, y as f32 + 0.5 - center.1);
            m[(y * w + x) as usize] = shape.contains(dx, dy, e) as u8;
        }
    }
    m
}

/// Bounding boxes `[x0, y0, x1, y1]` of the shapes' extents, grown by `margin`, intersect.
fn boxes_touch(a: ((f32, f32), f32), b: ((f32, f32), f32), margin: f32) -> bool {
    let r = a.1 + b.1 + margin;
    (a.0 .0 - b.0 .0).abs() <= r && (a.0 .1 - b.0 .1).abs() <= r
}

/// Generates scene `index` of the stream `seed` (deterministic).
///
/// # Panics
/// If `config.min_objects` is 0 or greater than `max_objects`, or the image is smaller than 32×32.
pub fn generate(seed: u64, index: u64, config: &ToyConfig) -> ToyScene {
    assert!(config.min_objects >= 1 && config.min_objects <= config.max_objects, "bad object count range");
    assert!(config.width >= 32 && config.height >= 32, "toy scenes need at least 32×32 pixels");
    let (w, h) = (config.width, config.height);
    let mut rng = Rng::new(mix(seed, index));
    let background = Background::ALL[rng.below(Background::ALL.len())];
    let noise_seed = rng.next_u64();
    let n = config.min_objects + rng.below(config.max_objects - config.min_objects + 1);
    let side = w.min(h) as f32;

    // Placed objects: (shape, colour, size, centre, extent, full mask).
    struct Placed {
        shape: Shape,
        colour: Colour,
        size: Size,
        center: (f32, f32),
        extent: f32,
        full: Vec<u8>,
    }
    let mut placed: Vec<Placed> = Vec::new();
    let mut attempts = 0;
    while placed.len() < n && attempts < 60 {
        attempts += 1;
        let shape = Shape::ALL[rng.below(4)];
        let colour = Colour::ALL[rng.below(Colour::ALL.len())];
        let size = if rng.below(2) == 0 { Size::Small } else { Size::Large };
        let frac = match size {
            Size::Small => 0.06 + 0.03 * rng.uniform() as f32,
            Size::Large => 0.14 + 0.05 * rng.uniform() as f32,
        };
        let e = (frac * side).max(3.0);
        // A third of the objects after the first are aimed at an earlier one, to make overlaps.
        let center = if !placed.is_empty() && rng.below(3) == 0 {
            let t = &placed[rng.below(placed.len())];
            let ang = rng.uniform() as f32 * std::f32::consts::TAU;
            let d = (t.extent + e) * (0.5 + 0.4 * rng.uniform() as f32);
            (t.center.0 + d * ang.cos(), t.center.1 + d * ang.sin())
        } else {
            (e + rng.uniform() as f32 * (w as f32 - 2.0 * e), e + rng.uniform() as f32 * (h as f32 - 2.0 * e))
        };
        if center.0 < e || center.1 < e || center.0 > w as f32 - e || center.1 > h as f32 - e {
            continue;
        }
        if placed.iter().any(|p| p.colour == colour && boxes_touch((p.center, p.extent), (center, e), 2.0)) {
            continue;
        }
        let full = full_mask(shape, center, e, w, h);
        // Every earlier object must keep at least half of its own pixels visible, and at least 12.
        let mut ok = true;
        for (i, p) in placed.iter().enumerate() {
            let own: u64 = p.full.iter().map(|&v| v as u64).sum();
            let visible: u64 = (0..p.full.len())
                .filter(|&k| p.full[k] != 0 && full[k] == 0 && placed[i + 1..].iter().all(|q| q.full[k] == 0))
                .count() as u64;
            if visible * 2 < own || visible < 12 {
                ok = false;
                break;
            }
        }
        if ok {
            placed.push(Placed { shape, colour, size, center, extent: e, full });
        }
    }

    let npx = (w * h) as usize;
    let mut objects = Vec::with_capacity(placed.len());
    for (i, p) in placed.iter().enumerate() {
        let mask = (0..npx).map(|k| (p.full[k] != 0 && placed[i + 1..].iter().all(|q| q.full[k] == 0)) as u8).collect();
        objects.push(ToyObject {
            shape: p.shape,
            colour: p.colour,
            size: p.size,
            center: p.center,
            extent: p.extent,
            mask,
        });
    }
    ToyScene { width: w, height: h, background, noise_seed, objects }
}

/// Renders the scene: background base colour ± 6 of deterministic noise, objects in flat colours.
pub fn render(scene: &ToyScene) -> RgbImage {
    let (w, h) = (scene.width, scene.height);
    let base = scene.background.rgb();
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let n = mix(scene.noise_seed, (y as u64) << 32 | x as u64);
            let d = (n % 13) as i32 - 6;
            let px = base.map(|c| (c as i32 + d).clamp(0, 255) as u8);
            img.put_pixel(x, y, Rgb(px));
        }
    }
    for o in &scene.objects {
        for (k, &m) in o.mask.iter().enumerate() {
            if m != 0 {
                let (x, y) = (k as u32 % w, k as u32 / w);
                img.put_pixel(x, y, Rgb(o.paint(x, y)));
            }
        }
    }
    img
}
