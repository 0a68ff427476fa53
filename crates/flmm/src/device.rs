//! `--device` and `--dtype` flags.

use anyhow::{bail, Context};
use candle_core::{DType, Device};

/// `cpu` or `cuda:N` (CUDA needs a build with `--features cuda`).
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().with_context(|| format!("bad device {s:?}: expected cuda:N"))?,
                None if s == "cuda" => 0,
                None => bail!("bad device {s:?}: expected cpu or cuda:N"),
            };
            Device::new_cuda(ordinal).with_context(|| format!("cannot open {s} (is flmm built with --features cuda?)"))
        }
        other => bail!("unknown device {other:?}: expected cpu or cuda:N"),
    }
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(spec: &str) -> anyhow::Result<DType> {
    match spec {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => bail!("unknown dtype {other:?}: expected f32, bf16 or f16"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_or_explain() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu").unwrap_err().to_string().contains("expected cpu or cuda:N"));
        assert!(parse_device("cuda:x").unwrap_err().to_string().contains("cuda:N"));
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("f64").is_err());
    }
}
