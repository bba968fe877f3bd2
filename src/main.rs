//! `pvabi`: the command-line front door of the pvabi project.

fn main() {
    println!("pvabi {}", env!("CARGO_PKG_VERSION"));
}
