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
    // A panic becomes one E! line for Telegraf. The process carries on: bluez-async 0.9 can
    // panic inside a background task of its own while everything else keeps working, and a
    // panic in one of our device tasks is noticed by the run loop, which then exits non-zero.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "E! internal error: {}",
            info.to_string().replace('\n', " | ")
        );
    }));
    let code = blebatt::run::main(cli);
    std::process::exit(code);
}
