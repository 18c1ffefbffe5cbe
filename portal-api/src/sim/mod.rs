//! The portal simulator.
