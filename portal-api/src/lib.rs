//! The Patient Portal HTTP contract: wire types, a typed async client, error
//! classification, and (feature `sim`) the portal simulator.
