//! palisade-agent
