//! derm-adapter (being written).
fn main() {}
