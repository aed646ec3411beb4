//! `firehose`, the command-line client: `tail` prints events as they arrive, `query` asks
//! the history, `status` shows the service and its readers, `doctor` checks the setup, `view` is a live terminal viewer.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
