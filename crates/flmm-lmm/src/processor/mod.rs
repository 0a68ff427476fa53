//! Image processors: turn a decoded image into the pixel tensor a backbone expects, plus the geometry
//! needed to map masks back to the original image.
