//! blebatt's entry point: parse the command line, run, map the result to an exit code.

use clap::Parser;

fn main() {
    let cli = blebatt::cli::Cli::parse();
    let verbosity = if cli.quiet {
        -1
    } else {
        cli.verbose.min(2) as i8
    };
    blebatt::logging::init(verbosity);
    let code = blebatt::run::main(cli);
    std::process::exit(code);
}
