//! Execution-provider selection. The config lists the providers a model
//! should prefer (e.g. `["tensorrt", "cuda", "cpu"]`); at start the agent
//! keeps those the loaded ONNX Runtime library was built with, registers them
//! in order, skips any that fail to register (missing CUDA libraries, no
//! device) with the reason, and always ends with the CPU provider. If the
//! session cannot be created with an accelerator, it is created again on the
//! CPU. One log line names what was chosen and why the others were not.

use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::SessionBuilder;

/// A provider the config may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    TensorRt,
    Cuda,
    OpenVino,
    Cpu,
}

/// Config spellings, in the default preference order of a GPU box.
pub const NAMES: &[&str] = &["tensorrt", "cuda", "openvino", "cpu"];

impl Provider {
    /// Parses a config name (case-insensitive).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "tensorrt" => Some(Provider::TensorRt),
            "cuda" => Some(Provider::Cuda),
            "openvino" => Some(Provider::OpenVino),
            "cpu" => Some(Provider::Cpu),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::OpenVino => "openvino",
            Provider::Cpu => "cpu",
        }
    }

    /// ONNX Runtime's name, as `GetAvailableProviders` reports it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::OpenVino => "OpenVINOExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }

    fn dispatch(self) -> ExecutionProviderDispatch {
        match self {
            Provider::TensorRt => ort::ep::TensorRT::default().build(),
            Provider::Cuda => ort::ep::CUDA::default().build(),
            Provider::OpenVino => ort::ep::OpenVINO::default().build(),
            Provider::Cpu => ort::ep::CPU::default().build(),
        }
        .error_on_failure()
    }
}

/// ONNX Runtime's execution providers compiled into the loaded library.
pub fn available() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    // SAFETY: ONNX Runtime fills `list` with `n` C strings, released below.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut n) };
    if !status.0.is_null() || list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..n as isize {
        // SAFETY: `i < n`, each entry is a NUL-terminated string owned by ORT.
        let s = unsafe { std::ffi::CStr::from_ptr(*list.offset(i)) };
        out.push(s.to_string_lossy().to_string());
    }
    // SAFETY: releases what GetAvailableProviders allocated.
    unsafe {
        let _ = (api.ReleaseAvailableProviders)(list, n);
    }
    out
}

/// What to try, in order, and what was left out before trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Accelerators to register, best first (CPU is implied last).
    pub accelerators: Vec<Provider>,
    /// Providers named in the config but left out, with the reason.
    pub skipped: Vec<(Provider, String)>,
}

/// Filters the preference list by what the library was built with.
/// Duplicates are dropped; anything after `cpu` in the list is never reached.
pub fn plan(preferred: &[Provider], available: &[String]) -> Plan {
    let mut accelerators = Vec::new();
    let mut skipped = Vec::new();
    for (i, &p) in preferred.iter().enumerate() {
        if preferred[..i].contains(&p) {
            continue;
        }
        if p == Provider::Cpu {
            for &later in &preferred[i + 1..] {
                if later != Provider::Cpu && !skipped.iter().any(|(s, _)| *s == later) {
                    skipped.push((later, "listed after cpu, so never tried".to_string()));
                }
            }
            break;
        }
        if available.iter().any(|a| a == p.ort_name()) {
            accelerators.push(p);
        } else {
            skipped.push((
                p,
                format!(
                    "not built into this ONNX Runtime library (it has: {})",
                    available.join(", ")
                ),
            ));
        }
    }
    Plan {
        accelerators,
        skipped,
    }
}

/// Registers the plan's accelerators on `builder`, each on its own so one
/// failure does not hide the next. Returns the builder, the registered
/// providers (best first) and the ones that failed with ONNX Runtime's reason.
pub fn register(
    mut builder: SessionBuilder,
    plan: &Plan,
) -> (SessionBuilder, Vec<Provider>, Vec<(Provider, String)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for &p in &plan.accelerators {
        match builder.with_execution_providers([p.dispatch()]) {
            Ok(b) => {
                builder = b;
                ok.push(p);
            }
            Err(e) => {
                failed.push((p, e.to_string()));
                builder = e.recover();
            }
        }
    }
    (builder, ok, failed)
}

/// A one-line account of a choice for the log, status and doctor.
pub fn describe(chosen: &[Provider], skipped: &[(Provider, String)]) -> String {
    let mut s = chosen
        .iter()
        .map(|p| p.as_str())
        .chain(std::iter::once("cpu"))
        .collect::<Vec<_>>()
        .join(" → ");
    for (p, why) in skipped {
        s.push_str(&format!("; {} skipped: {why}", p.as_str()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_only_what_the_library_has_in_preference_order() {
        let p = plan(
            &[
                Provider::TensorRt,
                Provider::Cuda,
                Provider::OpenVino,
                Provider::Cpu,
            ],
            &avail(&["CUDAExecutionProvider", "CPUExecutionProvider"]),
        );
        assert_eq!(p.accelerators, vec![Provider::Cuda]);
        let skipped: Vec<_> = p.skipped.iter().map(|(p, _)| *p).collect();
        assert_eq!(skipped, vec![Provider::TensorRt, Provider::OpenVino]);
        assert!(p.skipped[0].1.contains("CUDAExecutionProvider"));
    }

    #[test]
    fn cpu_only_library_plans_no_accelerator() {
        let p = plan(
            &[Provider::Cuda, Provider::Cpu],
            &avail(&["CPUExecutionProvider"]),
        );
        assert!(p.accelerators.is_empty());
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].1.contains("not built into"));
    }

    #[test]
    fn nothing_after_cpu_and_no_duplicates() {
        let p = plan(
            &[
                Provider::OpenVino,
                Provider::OpenVino,
                Provider::Cpu,
                Provider::Cuda,
            ],
            &avail(&["OpenVINOExecutionProvider", "CUDAExecutionProvider"]),
        );
        assert_eq!(p.accelerators, vec![Provider::OpenVino]);
        assert_eq!(p.skipped[0].0, Provider::Cuda);
        assert!(p.skipped[0].1.contains("after cpu"));
    }

    #[test]
    fn names_round_trip() {
        for n in NAMES {
            assert_eq!(Provider::parse(n).map(|p| p.as_str()), Some(*n));
        }
        assert_eq!(Provider::parse("CUDA"), Some(Provider::Cuda));
        assert_eq!(Provider::parse("gpu"), None);
    }

    #[test]
    fn description_ends_on_cpu() {
        assert_eq!(describe(&[], &[]), "cpu");
        let d = describe(
            &[Provider::Cuda],
            &[(Provider::TensorRt, "no libnvinfer".into())],
        );
        assert_eq!(d, "cuda → cpu; tensorrt skipped: no libnvinfer");
    }
}
