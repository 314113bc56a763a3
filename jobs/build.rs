//! Rebuilds this crate when a migration is added, changed or removed: `sqlx::migrate!` embeds
//! the folder at compile time, and Cargo does not otherwise notice a new file in it (sqlx's own
//! advice for `migrate!`).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
