//! Serving requests over the Open Inference Protocol (KServe v2): the
//! admission queue between clients and the pipeline.

pub mod admission;
