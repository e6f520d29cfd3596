//! palisade-datapath
