//! palisade-store
