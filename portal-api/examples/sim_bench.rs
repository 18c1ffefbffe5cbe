//! Simulator benchmark (not yet written).
fn main() {}
