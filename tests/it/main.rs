//! Every integration test in one binary, so the crate links once.
//! Each module is one area; `common` is the shared harness (real RTSP
//! simulator, mosquitto, the agent binary, an MQTT recorder).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on its own setup

mod bench;
mod cli;
mod common;
mod contract;
mod counting;
mod decode;
mod delivery;
mod demo;
mod deploy;
mod docs;
mod doctor;
mod evidence;
mod example_configs;
mod faults;
mod http_access;
mod k8s;
mod layering;
mod liveness;
mod metrics;
mod models;
mod pipeline;
mod plates;
mod probe;
mod quiet;
mod reload;
mod review_page;
mod review_xss;
mod rules_footage;
mod scenarios;
mod setup_page;
mod signals;
mod signer;
mod supply_chain;
mod throughput;
mod ward_broker;
mod watch;
