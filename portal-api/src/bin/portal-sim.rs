//! `portal-sim`: the Patient Portal simulator as a standalone server.

fn main() {
    eprintln!("portal-sim: not implemented yet");
    std::process::exit(2);
}
