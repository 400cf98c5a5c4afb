//! blebatt's entry point: parse the command line, run, map the result to an exit code.

use clap::Parser;

fn main() {
    let cli = match blebatt::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // Usage errors go to stderr like every other log line: prefixed for Telegraf.
            for line in e.to_string().lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("E! {line}");
            }
            std::process::exit(blebatt::run::EXIT_USAGE);
        }
        // --help and --version: stdout, exit 0.
        Err(e) => e.exit(),
    };
    let verbosity = if cli.quiet {
        -1
    } else {
        cli.verbose.min(2) as i8
    };
    blebatt::logging::init(verbosity);
    blebatt::logging::install_panic_hook(verbosity);
    let code = blebatt::run::main(cli);
    std::process::exit(code);
}
