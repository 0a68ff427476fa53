//! U-Net parity against mmseg's own UNet wrapped as F-LMM's UNetHead (tools/fixtures/unet_parity.py).
//!
//! Tolerance: 1e-4 relative to the output's magnitude. The f32 reference itself differs from the
//! same network run in f64 by up to 1.8e-5 (recorded in the fixture), so 1e-4 leaves room for a
//! different (but equally valid) f32 summation order while catching any real deviation.

mod support;

use candle_core::{DType, Device};
use flmm_head::{UNetConfig, UNetHead};
use serde_json::Value;
use support::*;

#[test]
fn fixture_weight_generator_matches_python_probe() {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("unet/unet_parity.json")).unwrap()).unwrap();
    let probe: Vec<f64> = json["probe"].as_array().unwrap().iter().map(|v| parse_hex_float(v.as_str().unwrap())).collect();
    let ours: Vec<f32> = fixture_weight("mask_head.conv_seg.weight", &[1, 64, 1, 1]).flatten_all().unwrap().to_vec1().unwrap();
    for (a, b) in ours.iter().zip(&probe) {
        assert_eq!(*a as f64, *b);
    }
}

/// Parses Python's `float.hex()` output, e.g. `-0x1.15b7e00000000p+1`.
fn parse_hex_float(s: &str) -> f64 {
    let (sign, rest) = s.strip_prefix('-').map(|r| (-1.0, r)).unwrap_or((1.0, s));
    let rest = rest.strip_prefix("0x").unwrap();
    let (mantissa, exp) = rest.split_once('p').unwrap();
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut value = u64::from_str_radix(int, 16).unwrap() as f64;
    for (i, ch) in frac.chars().enumerate() {
        value += ch.to_digit(16).unwrap() as f64 / 16f64.powi(i as i32 + 1);
    }
    sign * value * 2f64.powi(exp.parse::<i32>().unwrap())
}

#[test]
fn unet_matches_mmseg_reference() {
    let dir = fixtures_dir().join("unet");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("unet_parity.json")).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("unet_parity.safetensors"), &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for case in json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let c = case["c"].as_u64().unwrap() as usize;
        let head = UNetHead::new(UNetConfig { in_channels: c, ..Default::default() }, 0, &Device::Cpu).unwrap();

        // Our parameter names are exactly mmseg's state-dict keys.
        let reference_keys: Vec<(String, Vec<usize>)> = json["keys"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| (kv[0].as_str().unwrap().to_string(), kv[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
            .collect();
        let mut ours: Vec<(String, Vec<usize>)> =
            head.config().parameter_shapes().into_iter().map(|(k, s)| (format!("mask_head.{k}"), s)).collect();
        let mut sorted_reference = reference_keys.clone();
        ours.sort();
        sorted_reference.sort();
        assert_eq!(ours, sorted_reference, "{name}: parameter names/shapes differ from mmseg");

        // Load the reference weights through the official-key checkpoint path.
        let path = tmp.path().join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&fixture_weights(&reference_keys), &path).unwrap();
        assert!(head.load(&path).unwrap().is_empty());

        let input = &tensors[&format!("{name}.input")];
        if let Some(up) = tensors.get(&format!("{name}.upsampled")) {
            let err = relative_max_error(&head.prepare_input(input).unwrap(), up);
            assert!(err < 1e-5, "{name}: upsampled input differs by {err:e}");
        }
        let out = head.forward(input, DType::F32).unwrap();
        let expected = &tensors[&format!("{name}.output")];
        assert_eq!(out.dims(), expected.dims(), "{name}");
        let err = relative_max_error(&out, expected);
        println!("{name}: relative max error {err:e}");
        assert!(err < 1e-4, "{name}: relative max error {err:e}");
    }
}
