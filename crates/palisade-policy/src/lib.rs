//! palisade-policy
