//! The Lua scripts, loaded once per process. Each touches only keys of one
//! queue (one hash tag) and does bounded work per call.

use redis::Script;

/// The queue's scripts; see `src/lua/*.lua` for each one's contract.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) fetch: Script,
    pub(crate) settle: Script,
    pub(crate) renew: Script,
    pub(crate) counts: Script,
    pub(crate) dead: Script,
    pub(crate) trim: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            push: Script::new(include_str!("lua/push.lua")),
            fetch: Script::new(include_str!("lua/fetch.lua")),
            settle: Script::new(include_str!("lua/settle.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            counts: Script::new(include_str!("lua/counts.lua")),
            dead: Script::new(include_str!("lua/dead.lua")),
            trim: Script::new(include_str!("lua/trim.lua")),
        }
    }
}
