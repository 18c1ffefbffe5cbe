//! `portal-sync`: the command cron runs. (Filled by the enqueue-cli issue.)

fn main() {
    eprintln!("portal-sync: not implemented yet (see the enqueue-cli issue)");
    std::process::exit(2);
}
