//! The bundled network data are what their committed script writes (from its seeds).

#[path = "../examples/network_data.rs"]
mod network_data;

#[test]
fn bundled_network_data_is_what_its_script_writes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for (name, text) in [
        ("teacher.csv", network_data::teacher_csv()),
        ("classes.csv", network_data::classes_csv()),
    ] {
        let committed = std::fs::read_to_string(format!("{dir}/{name}")).expect(name);
        assert!(
            committed == text,
            "examples/{name} differs from what `cargo run --release --example network_data` writes"
        );
    }
}
