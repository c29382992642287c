//! Prints a generated configuration of N mixed resources (default 10,000) to stdout, for the
//! end-to-end benchmark in `bench/validate.py`.

#[path = "../benches/support/generate.rs"]
mod generate;

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    print!("{}", generate::mixed_config(n));
}
