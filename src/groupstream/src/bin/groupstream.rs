//! The `groupstream` program (being written).

fn main() {}
