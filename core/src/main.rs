//! `derm`: the offline command line.
fn main() -> anyhow::Result<()> {
    Ok(())
}
