//! `derm`: Derm's offline command line (see `derm --help`).

fn main() -> std::process::ExitCode {
    derm_core::cli::main()
}
