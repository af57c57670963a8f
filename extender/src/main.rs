//! derm-extender (being written).
fn main() {}
