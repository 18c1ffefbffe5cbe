//! Throwaway stores for tests (feature `testing`).
