//! stub, being written
