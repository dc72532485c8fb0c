//! The REST gateway: the QHAna plugin API turned into gRPC calls to plugins.
//!
//! Not built yet; the supervisor and the plugin contract come first.
