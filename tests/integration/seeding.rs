//! `kmsd serve --seed FILE` with the real binary: every seeded key checked
//! through the socket (it behaves like one a client made), a restart with
//! the same file changes nothing, ciphertexts under a seeded imported key
//! decrypt after a restart and in another store seeded from the same
//! material file, conflicts and bad files stop start-up with one line
//! naming the key, and kills during seeding leave a store the next start
//! finishes.

use crate::life::*;
use crate::store_open::start_must_fail_with;
use crate::support::Daemon;
use kms_proto::client::Client;
use kms_proto::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CARDS: &str = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
const RETIRED: &str = "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d";
const FIXTURES: &str = "d3adb33f-0000-4000-8000-00000000c0de";
const WAITING: &str = "5e5e5e5e-1111-4222-8333-444455556666";

/// A seed file like docs/seeding.md's example, its material file (0600,
/// random material) beside it. Returns (seed file, material file).
fn seed_files(dir: &Path) -> (PathBuf, PathBuf) {
    let material = dir.join("fixtures.hex");
    let mut m = [0u8; 32];
    kmsd::crypto::rng::fill(&mut m);
    std::fs::write(&material, format!("{}\n", hex::encode(m))).unwrap();
    std::fs::set_permissions(&material, std::fs::Permissions::from_mode(0o600)).unwrap();
    let seed = dir.join("seed.toml");
    write_seed(&seed, &material, "EXTERNAL");
    (seed, material)
}

fn write_seed(seed: &Path, material: &Path, fixtures_origin: &str) {
    let material_line = if fixtures_origin == "EXTERNAL" {
        format!("material_hex_file = {:?}\n", material.display().to_string())
    } else {
        String::new()
    };
    std::fs::write(
        seed,
        format!(
            r#"
[[key]]
key_id = "{CARDS}"
description = "payments: card data"
aliases = ["alias/payments/cards", "alias/payments/default"]
tags = {{ team = "payments", environment = "test" }}
rotation_enabled = true
rotation_period_days = 180

[[key]]
key_id = "{RETIRED}"
description = "payments: retired"
aliases = ["alias/payments/retired"]
state = "Disabled"

[[key]]
key_id = "{FIXTURES}"
description = "shared fixtures"
origin = "{fixtures_origin}"
{material_line}aliases = ["alias/fixtures"]
tags = {{ purpose = "fixtures" }}

[[key]]
key_id = "{WAITING}"
description = "import exercises"
origin = "EXTERNAL"
"#
        ),
    )
    .unwrap();
}

fn start_seeded(seed: &Path) -> Daemon {
    Daemon::start(&["--seed", seed.to_str().unwrap()])
}

/// What a client sees of one key: metadata, aliases, tags, rotation.
type Seen = (KeyMetadata, Vec<String>, Vec<(String, String)>, Answer);

/// Everything a client can see of the store's keys.
#[derive(Debug, PartialEq)]
struct View {
    keys: Vec<Seen>,
}

fn view(c: &mut Client) -> View {
    let mut ids: Vec<String> = c
        .list_keys(1000, None)
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    ids.sort();
    View {
        keys: ids
            .iter()
            .map(|id| {
                let mut aliases = aliases_of(c, id);
                aliases.sort();
                (
                    describe(c, id),
                    aliases,
                    tags_of(c, id),
                    call(
                        c,
                        Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: id }),
                    ),
                )
            })
            .collect(),
    }
}

#[test]
fn seeded_keys_behave_like_keys_clients_made_and_reloading_changes_nothing() {
    let files = tempfile::tempdir().unwrap();
    let (seed, _) = seed_files(files.path());
    let mut d = start_seeded(&seed);
    let mut c = d.client();

    let m = describe(&mut c, CARDS);
    assert_eq!(
        (m.description.as_str(), m.key_state, m.origin),
        ("payments: card data", KeyState::Enabled, Origin::Kmsd)
    );
    assert_eq!(
        {
            let mut a = aliases_of(&mut c, CARDS);
            a.sort();
            a
        },
        ["alias/payments/cards", "alias/payments/default"]
    );
    assert_eq!(
        tags_of(&mut c, CARDS),
        [
            ("environment".to_owned(), "test".to_owned()),
            ("team".to_owned(), "payments".to_owned())
        ]
    );
    let r = rotation_status(&mut c, CARDS);
    assert!(r.key_rotation_enabled);
    assert_eq!(r.rotation_period_in_days, Some(180));

    let m = describe(&mut c, RETIRED);
    assert_eq!(m.key_state, KeyState::Disabled);
    assert_eq!(encrypt(&mut c, RETIRED, b"x"), Err(ErrorKind::Disabled));
    assert_eq!(aliases_of(&mut c, RETIRED), ["alias/payments/retired"]);

    let m = describe(&mut c, FIXTURES);
    assert_eq!(
        (m.key_state, m.origin),
        (KeyState::Enabled, Origin::External)
    );
    assert_eq!(
        tags_of(&mut c, FIXTURES),
        [("purpose".into(), "fixtures".into())]
    );
    assert_eq!(describe(&mut c, WAITING).key_state, KeyState::PendingImport);

    // They work like any key: crypto, rotation, state changes.
    let under_cards = encrypt(&mut c, CARDS, b"card").unwrap();
    let under_fixtures = encrypt(&mut c, FIXTURES, b"fixture").unwrap();
    ok(
        &mut c,
        Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: CARDS }),
    );
    assert_eq!(describe(&mut c, CARDS).current_version, 2);
    assert_eq!(decrypt(&mut c, &under_cards).unwrap(), b"card");
    ok(&mut c, Operation::EnableKey(EnableKey { key_id: RETIRED }));
    ok(&mut c, Operation::DisableKey(DisableKey { key_id: CARDS }));

    // A restart with the same file changes nothing, not even what clients
    // changed since the seeding.
    let before = view(&mut c);
    assert_eq!(before.keys.len(), 4);
    drop(c);
    d.restart();
    let mut c = d.client();
    assert_eq!(view(&mut c), before);
    assert_eq!(decrypt(&mut c, &under_fixtures).unwrap(), b"fixture");
    ok(&mut c, Operation::EnableKey(EnableKey { key_id: CARDS }));
    assert_eq!(decrypt(&mut c, &under_cards).unwrap(), b"card");
    assert!(
        d.log().contains("checked and left as it is"),
        "the second start found the keys"
    );
}

#[test]
fn seeded_material_is_the_same_key_in_another_store() {
    let files = tempfile::tempdir().unwrap();
    let (seed, _) = seed_files(files.path());
    let a = start_seeded(&seed);
    let b = start_seeded(&seed);
    let blob = encrypt(&mut a.client(), FIXTURES, b"made in a").unwrap();
    assert_eq!(decrypt(&mut b.client(), &blob).unwrap(), b"made in a");
    // A key kmsd made is another key in each store.
    let blob = encrypt(&mut a.client(), CARDS, b"made in a").unwrap();
    assert_eq!(
        decrypt(&mut b.client(), &blob),
        Err(ErrorKind::InvalidCiphertext)
    );
}

/// The one line of a refused start.
fn refused(d: &Daemon, seed: &Path) -> String {
    let stderr = start_must_fail_with(
        d.dir.path(),
        &d.data_dir,
        &["--seed", seed.to_str().unwrap()],
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{stderr}");
    assert!(
        lines[0].contains(&seed.display().to_string()),
        "names the file: {}",
        lines[0]
    );
    lines[0].to_owned()
}

#[test]
fn conflicts_and_bad_files_stop_start_up_naming_the_key() {
    let files = tempfile::tempdir().unwrap();
    let (seed, material) = seed_files(files.path());
    let mut d = start_seeded(&seed);
    let mut c = d.client();
    create(&mut c, Origin::Kmsd);
    let before = view(&mut c);
    drop(c);
    d.stop();

    // The origin of a key cannot change.
    write_seed(&seed, &material, "AWS_KMS");
    let line = refused(&d, &seed);
    assert!(line.contains(FIXTURES) && line.contains("origin"), "{line}");

    // Another material for the imported key.
    write_seed(&seed, &material, "EXTERNAL");
    let good = std::fs::read(&material).unwrap();
    let mut m = [0u8; 32];
    kmsd::crypto::rng::fill(&mut m);
    std::fs::write(&material, format!("{}\n", hex::encode(m))).unwrap();
    let line = refused(&d, &seed);
    assert!(
        line.contains(FIXTURES) && line.contains("material"),
        "{line}"
    );
    std::fs::write(&material, &good).unwrap();

    // A material file others can read.
    std::fs::set_permissions(&material, std::fs::Permissions::from_mode(0o644)).unwrap();
    let new_seed = files.path().join("new.toml");
    std::fs::write(
        &new_seed,
        format!(
            "[[key]]\nkey_id = \"77777777-7777-4777-8777-777777777777\"\norigin = \"EXTERNAL\"\n\
             material_hex_file = {:?}\n",
            material.display().to_string()
        ),
    )
    .unwrap();
    let line = refused(&d, &new_seed);
    assert!(
        line.contains("0644") && line.contains("77777777-"),
        "{line}"
    );
    std::fs::set_permissions(&material, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An alias of the file that names another key.
    std::fs::write(
        &new_seed,
        "[[key]]\nkey_id = \"88888888-8888-4888-8888-888888888888\"\n\
         aliases = [\"alias/payments/cards\"]\n",
    )
    .unwrap();
    let line = refused(&d, &new_seed);
    assert!(
        line.contains("88888888-") && line.contains("alias/payments/cards"),
        "{line}"
    );

    // A file that does not parse changes nothing.
    std::fs::write(&new_seed, "[[key]]\nkey_id = \"x\"\ncolour = 1\n").unwrap();
    let line = refused(&d, &new_seed);
    assert!(line.contains("colour"), "{line}");

    // None of it changed a key (the alias conflict left its key made but
    // marked unfinished: the next start with that file tries again).
    d.restart();
    let mut c = d.client();
    let after = view(&mut c);
    let without_new: Vec<_> = after
        .keys
        .into_iter()
        .filter(|k| k.0.key_id != "88888888-8888-4888-8888-888888888888")
        .collect();
    assert_eq!(without_new, before.keys);
}

#[test]
fn kills_during_seeding_are_finished_by_the_next_start() {
    let files = tempfile::tempdir().unwrap();
    let (seed, _) = seed_files(files.path());
    let reference = start_seeded(&seed);
    let want = view(&mut reference.client());
    drop(reference);
    let mut d = Daemon::start(&[]);
    d.stop();
    let mut seed_arg = vec!["serve".to_owned()];
    seed_arg.extend(["--socket", d.socket.to_str().unwrap()].map(String::from));
    seed_arg.extend(["--data-dir", d.data_dir.to_str().unwrap()].map(String::from));
    seed_arg.extend(["--seed", seed.to_str().unwrap()].map(String::from));
    let mut rng_state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..6 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .args(&seed_arg)
            .env("KMSD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_micros(rng_state % 150_000));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    d.restart_with(&["--seed", seed.to_str().unwrap()]);
    let got = view(&mut d.client());
    // The same keys, aliases, tags and settings as a store seeded in one
    // go (creation dates and rotation dates aside).
    let strip = |v: View| -> Vec<_> {
        v.keys
            .into_iter()
            .map(|(mut m, a, t, r)| {
                m.creation_date = 0;
                let r = r.map(|o| match o {
                    Output::GetKeyRotationStatus(mut s) => {
                        s.next_rotation_date = s.next_rotation_date.map(|_| 0);
                        Output::GetKeyRotationStatus(s)
                    }
                    o => o,
                });
                (m, a, t, r)
            })
            .collect()
    };
    assert_eq!(strip(got), strip(want));
}
