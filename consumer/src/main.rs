//! `firehose`, the command-line client. Its subcommands (tail, query, status, view, doctor)
//! talk to the service over the control socket, which is not built yet; until then this
//! command says so instead of pretending.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => println!("firehose {}", env!("CARGO_PKG_VERSION")),
        None | Some("--help" | "-h" | "help") => {
            println!(
                "firehose {}: the Firehose client",
                env!("CARGO_PKG_VERSION")
            );
            println!();
            println!("The subcommands tail, query, status, view and doctor need the service's");
            println!("control socket, which is not built yet. To see the ring stream between");
            println!("two processes now, run: firehosed demo");
        }
        Some(other) => {
            eprintln!(
                "firehose: '{other}' is not available yet: it needs the service's control socket"
            );
            std::process::exit(2);
        }
    }
}
