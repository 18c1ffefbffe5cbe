//! End-to-end, fault and load tests over real processes, and the shared harness
//! that starts private Redis servers, stores and the portal simulator.
