//! palisade-lab
