//! Front ends of the `kiln` subcommands: each parses its arguments, calls the library and
//! prints. No model logic lives here.

pub mod bench;
pub mod chat;
pub mod common;
pub mod convert;
pub mod imatrix;
pub mod inspect;
pub mod perplexity;
pub mod quantize;
pub mod run;
