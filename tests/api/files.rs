//! Files at rest: the real binary's data directory (SQLite database and its
//! WAL, the generated key-encryption key, the development key, the dev
//! mailbox with codes and links) is readable by its user only.
#![cfg(unix)]

use std::{os::unix::fs::PermissionsExt, path::Path};

use crate::helpers::{Served, TempDir};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory latchkey made under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(".".to_owned(), mode(dir))];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push((name, mode(&path)));
        }
    }
    out.sort();
    out
}

/// Starts the real binary on `data` (SQLite, dev mailbox), makes it write a
/// sign-in email, and returns it running.
async fn serve_and_mail(data: &Path) -> Served {
    let mut served = Served::start(data, &[]).await;
    let key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let response = reqwest::Client::new()
        .post(format!("http://{}/auth/start", served.http))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "email": "files@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    served
        .log_line(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("DEV MAILBOX"))
        })
        .await;
    served
}

#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_private() {
    let tmp = TempDir::new();
    // Missing: the server makes it.
    let data = tmp.path.join("data");
    let served = serve_and_mail(&data).await;

    let found = modes(&data);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        ".",
        "latchkey.db",
        "latchkey.db-wal",
        "latchkey.db-shm",
        "kek",
        "dev-api-key",
        "mailbox",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing in {found:?}");
    }
    assert!(
        names.iter().any(|n| n.ends_with(".eml")),
        "no email in {found:?}"
    );
    for (name, mode) in &found {
        let wanted = if name == "." || name == "mailbox" {
            0o700
        } else {
            0o600
        };
        assert_eq!(*mode, wanted, "{name} is {mode:04o} in {found:?}");
    }
    served.kill().await;
}

#[tokio::test]
async fn an_existing_readable_data_directory_is_tightened_at_start_up() {
    let tmp = TempDir::new();
    let data = tmp.path.join("data");
    serve_and_mail(&data).await.kill().await;
    // As an older latchkey left it: 0755 and 0644.
    for (name, _) in modes(&data) {
        let path = data.join(&name);
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    // Someone else's file in the directory is not ours to change.
    let other = data.join("notes.txt");
    std::fs::write(&other, "keep").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();

    let served = Served::start(&data, &[]).await;
    for (name, mode) in modes(&data) {
        let wanted = match name.as_str() {
            "notes.txt" => 0o644,
            "." | "mailbox" => 0o700,
            _ => 0o600,
        };
        assert_eq!(mode, wanted, "{name} is {mode:04o}");
    }
    // Each change is logged, naming the file and the modes.
    let log = served.early_log.join("\n");
    for name in ["kek", "latchkey.db", "dev-api-key", "mailbox"] {
        let path = data.join(name).display().to_string();
        assert!(
            served.early_log.iter().any(|l| l.contains(&path)
                && l.contains("removed group and other access")
                && l.contains("\"from\":\"0")),
            "no log line for {path}:\n{log}"
        );
    }
    served.kill().await;
}
