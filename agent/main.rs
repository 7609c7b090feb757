//! Command line of `ioc-agent`: parsing and dispatch live in `ioc_agent::cli`,
//! one file per subcommand.

fn main() -> std::process::ExitCode {
    ioc_agent::cli::main()
}
