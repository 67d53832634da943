//! Tests of the stores and the refresh locks: the embedded SQLite store (semantics,
//! privacy, durability, several writers and processes, a writer killed mid-way), the
//! lock directory (within and across processes) and the Igor store against a real
//! igor-iot 0.99.1 server.
//!
//! Some tests run parts of themselves in child processes: they start this test binary
//! again, filtered to the same test, with `HEALTHPULL_STORE_CHILD` saying what to do.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use healthpull::auth::lock::LockDir;
use healthpull::igor::xml::to_igor_xml;
use healthpull::secret::Secret;
use healthpull::store::archive::{Archive, Commit, Counts, NewEntry, Select};
use healthpull::store::{IgorStore, IgorStoreConfig, SqliteStore, Store, StoreError};
use serde_json::{Value, json};

use crate::support::igor::{Igor, IgorOptions};

/// Environment variable that turns a test into a child-process helper.
const CHILD_ROLE: &str = "HEALTHPULL_STORE_CHILD";

fn temp_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("store.sqlite")).expect("open the store");
    (dir, store)
}

fn token() -> Value {
    json!({
        "access_token": "ACCESS",
        "refresh_token": "REFRESH",
        "expires_in": 28800,
        "scope": ["weight", "heartrate"],
        "token_type": "Bearer",
        "user_id": "7ABCDE",
        "expires_at": 1795537246.25
    })
}

/// What the old plugin stored for one `get_bodyweight` measurement (igor.md section 2).
fn raw_weight() -> Value {
    json!({"weight": [{
        "bmi": 23.1, "date": "2019-03-01", "logId": 1551400000000_u64,
        "source": "Aria", "time": "07:12:30", "weight": 75.3
    }]})
}

/// The bytes Igor stored for [`raw_weight`] under `jack` (observed with the real plugin).
const RAW_WEIGHT_XML: &str = "<jack><weight><bmi>23.1</bmi><date>2019-03-01</date><logId>1551400000000</logId><source>Aria</source><time>07:12:30</time><weight>75.3</weight></weight></jack>";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn companion(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------
// Embedded store
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn embedded_put_get_delete_round_trip_keeps_values_exact() {
    let (_dir, store) = temp_store();
    let path = "identities/jack/plugindata/fitbit/token";
    assert_eq!(store.get(path).await.expect("get"), None);

    let value = json!({
        "token": token(),
        "numbers": [0, -3, 1551400000000_u64, 23.0, 75.3, 1e20, 18446744073709551615_u64],
        "flags": {"yes": true, "no": false, "nothing": null, "empty": "", "obj": {}},
        "nested": [[1, 2], {"a": [{"b": "007"}]}],
        "odd keys": {"1abc": 1, "a/b": 2, "~x": 3, "": 4, "_e": 5}
    });
    store.put(path, &value).await.expect("put");
    let back = store.get(path).await.expect("get").expect("present");
    assert_eq!(back, value);
    assert_eq!(
        serde_json::to_string(&back).expect("json"),
        serde_json::to_string(&value).expect("json"),
        "key order and number formatting survive"
    );

    store
        .put(path, &json!("just text"))
        .await
        .expect("put a leaf");
    assert_eq!(
        store.get(path).await.expect("get"),
        Some(json!("just text"))
    );

    store.delete(path).await.expect("delete");
    assert_eq!(store.get(path).await.expect("get"), None);
    store
        .delete(path)
        .await
        .expect("deleting what is absent is fine");
    store
        .delete("never/was/here")
        .await
        .expect("deleting what is absent is fine");
    assert_eq!(store.kind(), "embedded");
    store.save().await.expect("save is a no-op");
}

#[tokio::test]
async fn embedded_get_of_a_parent_assembles_its_children() {
    let (_dir, store) = temp_store();
    let base = "identities/jack/plugindata/fitbit";
    store
        .put(&format!("{base}/token"), &token())
        .await
        .expect("put token");
    store
        .put(
            &format!("{base}/methods"),
            &json!("get_bodyweight,get_bodyfat"),
        )
        .await
        .expect("put methods");
    store
        .put(&format!("{base}/period"), &json!("1m"))
        .await
        .expect("put period");

    let expected =
        json!({"token": token(), "methods": "get_bodyweight,get_bodyfat", "period": "1m"});
    let parent = store.get(base).await.expect("get").expect("present");
    assert_eq!(parent, expected);
    assert_eq!(
        parent
            .as_object()
            .expect("object")
            .keys()
            .collect::<Vec<_>>(),
        ["token", "methods", "period"],
        "children come back in the order they were created"
    );
    assert_eq!(
        store.get("identities/jack").await.expect("get"),
        Some(json!({"plugindata": {"fitbit": expected}}))
    );
    assert_eq!(
        store
            .get(&format!("{base}/token/scope"))
            .await
            .expect("get"),
        Some(json!(["weight", "heartrate"])),
        "a key inside a stored object is addressable"
    );
    assert_eq!(
        store
            .get(&format!("{base}/token/scope/x"))
            .await
            .expect("get"),
        None
    );
    assert_eq!(store.get("identities/jill").await.expect("get"), None);
}

#[tokio::test]
async fn embedded_put_replaces_the_whole_subtree_and_nothing_else() {
    let (_dir, store) = temp_store();
    store
        .put("a/b", &json!({"x": 1, "y": {"z": 2}}))
        .await
        .expect("put");
    store.put("a/c", &json!(3)).await.expect("put");
    store
        .put("a/b/y/w", &json!(4))
        .await
        .expect("put below a stored object");
    assert_eq!(
        store.get("a").await.expect("get"),
        Some(json!({"b": {"x": 1, "y": {"z": 2, "w": 4}}, "c": 3}))
    );

    store
        .put("a/b", &json!({"q": [1, 2]}))
        .await
        .expect("replace");
    let a = store.get("a").await.expect("get").expect("present");
    assert_eq!(a, json!({"b": {"q": [1, 2]}, "c": 3}));
    assert_eq!(
        a.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["b", "c"],
        "a replaced element keeps its place among its siblings"
    );

    store
        .put("a/c", &json!({"deeper": true}))
        .await
        .expect("leaf to object");
    store
        .put("a/b/q", &json!("text"))
        .await
        .expect("list to leaf");
    assert_eq!(
        store.get("a").await.expect("get"),
        Some(json!({"b": {"q": "text"}, "c": {"deeper": true}}))
    );

    store
        .put("a", &json!({"only": 1}))
        .await
        .expect("replace the parent");
    assert_eq!(store.get("a").await.expect("get"), Some(json!({"only": 1})));
    assert_eq!(store.get("a/b").await.expect("get"), None);

    store
        .put("a/only/sub", &json!(1))
        .await
        .expect_err("below a number");
    store.put("n", &json!(null)).await.expect("put null");
    store
        .put("n/child", &json!(1))
        .await
        .expect("an empty element takes children");
    assert_eq!(
        store.get("n").await.expect("get"),
        Some(json!({"child": 1}))
    );

    store.delete("a/only").await.expect("delete");
    assert_eq!(store.get("a").await.expect("get"), Some(json!({})));
    store.put("a/x", &json!(1)).await.expect("put");
    store.delete("a").await.expect("delete subtree");
    assert_eq!(store.get("a/x").await.expect("get"), None);
    assert_eq!(store.get("n/child").await.expect("get"), Some(json!(1)));
}

#[tokio::test]
async fn embedded_refuses_bad_paths_and_trees_igor_cannot_hold() {
    let (_dir, store) = temp_store();
    for bad in ["", "/a", "a/", "a//b", "1abc", "a/b c", "a/b[1]", "a/../b"] {
        let message = store.get(bad).await.expect_err(bad).to_string();
        assert!(message.starts_with("invalid store path"), "{message}");
        store.put(bad, &json!(1)).await.expect_err(bad);
        store.delete(bad).await.expect_err(bad);
        store.export_xml(bad).await.expect_err(bad);
    }

    store.put("s/list", &json!([1, 2])).await.expect("put");
    let error = store
        .put("s/list/x", &json!(1))
        .await
        .expect_err("below a list");
    assert!(
        matches!(error, StoreError::NotAContainer { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot write s/list/x: s/list holds a list, not a container of elements"
    );

    let error = store
        .put("s/attr", &json!({"@unit": "kg", "#text": "75.3"}))
        .await
        .expect_err("attributes cannot be written from JSON");
    assert!(
        matches!(error, StoreError::Unrepresentable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("cannot store s/attr: "),
        "{error}"
    );
    assert_eq!(store.get("s/attr").await.expect("get"), None);
}

#[tokio::test]
async fn embedded_export_xml_is_igors_conversion() {
    let (_dir, store) = temp_store();
    store
        .put("sensors/fitbit/jack", &raw_weight())
        .await
        .expect("put");
    assert_eq!(
        store
            .export_xml("sensors/fitbit/jack")
            .await
            .expect("export")
            .as_deref(),
        Some(RAW_WEIGHT_XML)
    );

    let values = [
        ("identities/jack/plugindata/fitbit/token", token()),
        ("plugindata/fitbit/client_id", json!("0123456")),
        (
            "sensors/fitbit/jill",
            json!({"body-weight": [{"value": 75.0, "dateTime": "2026-11-01"}, {"value": 74.5, "dateTime": "2026-11-02"}],
                   "a b": {"c": null}, "flags": [true, false], "none": [], "list": [[1, 2]]}),
        ),
        ("sandbox/empty", json!({})),
        ("sandbox/nothing", json!(null)),
    ];
    for (path, value) in &values {
        store.put(path, value).await.expect("put");
        let tag = path.rsplit('/').next().expect("tag");
        assert_eq!(
            store.export_xml(path).await.expect("export"),
            Some(to_igor_xml(tag, value)),
            "{path}"
        );
    }
    // A parent assembled from separate writes exports like the assembled value.
    let parent = store
        .get("sensors/fitbit")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        store.export_xml("sensors/fitbit").await.expect("export"),
        Some(to_igor_xml("fitbit", &parent))
    );
    assert_eq!(
        store.export_xml("sensors/nobody").await.expect("export"),
        None
    );
}

#[tokio::test]
async fn embedded_files_are_readable_by_the_owner_only() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("new-dir/store.sqlite");
    let store = SqliteStore::open(&file).expect("open");
    store
        .put("plugindata/fitbit/client_secret", &json!("SECRET"))
        .await
        .expect("put");
    assert_eq!(
        mode(file.parent().expect("parent")),
        0o700,
        "created directory"
    );
    for path in [
        file.clone(),
        companion(&file, "-wal"),
        companion(&file, "-shm"),
    ] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    drop(store);

    // A file left readable by others (e.g. copied around) is tightened on open.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let store = SqliteStore::open(&file).expect("reopen");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        store
            .get("plugindata/fitbit/client_secret")
            .await
            .expect("get"),
        Some(json!("SECRET"))
    );
}

#[tokio::test]
async fn embedded_data_survives_reopening() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("store.sqlite");
    {
        let store = SqliteStore::open(&file).expect("open");
        store
            .put("identities/jack/plugindata/fitbit/token", &token())
            .await
            .expect("put");
        store
            .put("sensors/fitbit/jack", &raw_weight())
            .await
            .expect("put");
        store
            .delete("sensors/fitbit/jack/weight")
            .await
            .expect("delete");
    }
    let store = SqliteStore::open(&file).expect("reopen");
    assert_eq!(
        store
            .get("identities/jack/plugindata/fitbit/token")
            .await
            .expect("get"),
        Some(token())
    );
    assert_eq!(
        store.get("sensors/fitbit/jack").await.expect("get"),
        Some(json!({}))
    );
    assert_eq!(store.file(), file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_serves_many_tasks_at_once() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for index in 0..48 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let path = format!("sensors/many/user{index}");
            store
                .put(&path, &json!({"n": index, "all": [index, index]}))
                .await?;
            store.put("sensors/shared/last", &json!(index)).await?;
            // Every read of the shared parent sees whole children only.
            if let Some(Value::Object(users)) = store.get("sensors/many").await? {
                for (name, user) in users {
                    let n = user["n"].as_u64().expect("n");
                    assert_eq!(name, format!("user{n}"));
                    assert_eq!(user["all"], json!([n, n]));
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("store operations");
    }
    let users = store
        .get("sensors/many")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(users.as_object().expect("object").len(), 48);
    let last = store
        .get("sensors/shared/last")
        .await
        .expect("get")
        .expect("present");
    assert!(last.as_u64().is_some_and(|n| n < 48), "{last}");
}

#[test]
fn embedded_stores_in_two_threads_share_one_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("store.sqlite");
    let writers: Vec<_> = ["left", "right"]
        .into_iter()
        .map(|name| {
            let file = file.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    // A separate connection per thread, like a separate process.
                    let store = SqliteStore::open(&file).expect("open");
                    for index in 0..60 {
                        store
                            .put(&format!("sensors/two/{name}{index}"), &json!({"i": index}))
                            .await
                            .expect("put");
                    }
                });
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let all = runtime
        .block_on(SqliteStore::open(&file).expect("open").get("sensors/two"))
        .expect("get")
        .expect("present");
    assert_eq!(all.as_object().expect("object").len(), 120);
}

/// Starts this test binary again, running only `test` (as `store::<test>`) in `role`.
fn spawn_child(test: &str, role: &str) -> Child {
    let exe = std::env::current_exe().expect("the test binary");
    Command::new(exe)
        .args([
            &format!("store::{test}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a child test process")
}

/// The child role given to this process, if it is one.
fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

#[tokio::test]
async fn embedded_store_is_shared_by_two_processes() {
    const KEYS: usize = 40;
    if let Some(role) = child_role() {
        // Child: `<file>|<name>`: write KEYS entries under one shared parent.
        let (file, name) = role.split_once('|').expect("file|name");
        let store = SqliteStore::open(Path::new(file)).expect("open");
        for index in 0..KEYS {
            store
                .put(
                    &format!("sensors/procs/{name}{index}"),
                    &json!({"i": index}),
                )
                .await
                .expect("child put");
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("store.sqlite");
    let file_text = file.to_str().expect("utf-8 path");
    let children: Vec<Child> = ["first", "second"]
        .into_iter()
        .map(|name| {
            spawn_child(
                "embedded_store_is_shared_by_two_processes",
                &format!("{file_text}|{name}"),
            )
        })
        .collect();
    // This process writes at the same time.
    let store = SqliteStore::open(&file).expect("open");
    for index in 0..KEYS {
        store
            .put(
                &format!("sensors/procs/parent{index}"),
                &json!({"i": index}),
            )
            .await
            .expect("parent put");
    }
    for mut child in children {
        let status = child.wait().expect("wait for child");
        assert!(status.success(), "child writer failed: {status}");
    }
    let all = store
        .get("sensors/procs")
        .await
        .expect("get")
        .expect("present");
    let all = all.as_object().expect("object");
    assert_eq!(all.len(), 3 * KEYS);
    for prefix in ["first", "second", "parent"] {
        for index in 0..KEYS {
            assert_eq!(all[&format!("{prefix}{index}")], json!({"i": index}));
        }
    }
}

/// One generation of the crash test: every entry carries the generation number.
fn generation(number: u64) -> Value {
    let entries: Vec<Value> = (0..400)
        .map(|index| json!({"generation": number, "index": index, "pad": "x".repeat(64)}))
        .collect();
    json!({"generation": number, "body-weight": entries})
}

/// Starts a child that keeps replacing `sensors/crash/jack` in `file`, lets it commit a
/// few generations, measures how long one write takes, kills it (SIGKILL) `fraction`
/// of a write after a commit, and returns the last generation it reported committed.
fn kill_writer_mid_way(file: &Path, fraction: f64) -> u64 {
    let mut child = spawn_child(
        "embedded_write_killed_mid_way_keeps_a_whole_value",
        file.to_str().expect("utf-8 path"),
    );
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut committed = Vec::new();
    while committed.len() < 8 {
        let line = lines
            .next()
            .expect("the child stopped writing")
            .expect("read child output");
        if let Some(number) = line.strip_prefix("committed ") {
            committed.push((Instant::now(), number.parse::<u64>().expect("generation")));
        }
    }
    let (first, _) = committed[2];
    let (last, last_number) = committed[7];
    let one_write = (last - first) / 5;
    std::thread::sleep(one_write.mul_f64(fraction));
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    last_number
}

#[tokio::test]
async fn embedded_write_killed_mid_way_keeps_a_whole_value() {
    if let Some(file) = child_role() {
        // Child: replace the value over and over, reporting each committed generation.
        let store = SqliteStore::open(Path::new(&file)).expect("open");
        let start = match store.get("sensors/crash/jack").await.expect("get") {
            Some(value) => value["generation"].as_u64().expect("generation") + 1,
            None => 0,
        };
        for number in start.. {
            store
                .put("sensors/crash/jack", &generation(number))
                .await
                .expect("child put");
            println!("committed {number}");
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("store.sqlite");
    // Kills spread over the length of one write, so that some land with a transaction
    // open whatever phase of the write takes longest. (Where exactly each kill lands
    // is up to the scheduler; the check below holds wherever it lands.)
    for fraction in [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9] {
        let child_file = file.clone();
        let last_committed =
            tokio::task::spawn_blocking(move || kill_writer_mid_way(&child_file, fraction))
                .await
                .expect("killer");
        let store = SqliteStore::open(&file).expect("reopen after the crash");
        let value = store
            .get("sensors/crash/jack")
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("value gone after a kill at {fraction} of a write"));
        let number = value["generation"].as_u64().expect("generation");
        assert!(
            number >= last_committed,
            "lost a committed write: {number} < {last_committed}"
        );
        assert_eq!(
            value,
            generation(number),
            "a torn value (kill at {fraction})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------

/// Whether `future` is still pending after a short while.
async fn still_waiting<F: std::future::Future>(future: F) -> bool {
    tokio::time::timeout(Duration::from_millis(300), future)
        .await
        .is_err()
}

#[tokio::test]
async fn lock_excludes_tasks_of_one_process() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let locks = Arc::new(LockDir::new(dir.path().join("locks")));
    let guard = locks.lock("fitbit/jack").await.expect("lock");
    assert_eq!(guard.key(), "fitbit/jack");

    let waiter = {
        let locks = Arc::clone(&locks);
        tokio::spawn(async move { locks.lock("fitbit/jack").await.map(|_guard| ()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a second task got the same key");

    let other = tokio::time::timeout(Duration::from_secs(5), locks.lock("fitbit/jill"))
        .await
        .expect("another key is not blocked")
        .expect("lock");
    drop(other);

    drop(guard);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter gets the lock once it is released")
        .expect("task")
        .expect("lock");
}

#[tokio::test]
async fn lock_excludes_other_processes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let locks = LockDir::new(dir.path().join("locks"));
    let key = "fitbit/jack";
    let file = locks.lock_file(key).expect("lock file");

    // We hold it: util-linux flock (another process) cannot take it.
    let guard = locks.lock(key).await.expect("lock");
    let status = Command::new("flock")
        .args(["--nonblock", "--conflict-exit-code", "42"])
        .arg(&file)
        .arg("true")
        .status()
        .expect("run flock (util-linux)");
    assert_eq!(status.code(), Some(42), "flock got a lock we hold");
    // Nor can a second LockDir (own mutexes, own open file description).
    let second = LockDir::new(dir.path().join("locks"));
    assert!(
        still_waiting(second.lock(key)).await,
        "a second open file got the lock"
    );
    drop(guard);
    let status = Command::new("flock")
        .args(["--nonblock", "--conflict-exit-code", "42"])
        .arg(&file)
        .arg("true")
        .status()
        .expect("run flock");
    assert!(
        status.success(),
        "the lock was not released on drop: {status}"
    );

    // Another process holds it: we wait until it lets go.
    let mut holder = Command::new("flock")
        .arg(&file)
        .args(["sh", "-c", "echo locked; cat >/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run flock");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "locked\n");
    assert!(
        still_waiting(locks.lock(key)).await,
        "got a lock another process holds"
    );
    drop(holder.stdin.take());
    let guard = tokio::time::timeout(Duration::from_secs(5), locks.lock(key))
        .await
        .expect("the lock is ours once the other process exits")
        .expect("lock");
    holder.wait().expect("reap flock");
    drop(guard);
}

#[tokio::test]
async fn lock_files_stay_in_a_private_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lock_dir = dir.path().join("state/locks");
    let locks = LockDir::new(lock_dir.clone());
    let guard = locks.lock("../../escape/key").await.expect("lock");
    assert_eq!(mode(&lock_dir), 0o700);
    let file = locks.lock_file("../../escape/key").expect("lock file");
    assert_eq!(file.parent(), Some(lock_dir.as_path()));
    assert!(file.exists());
    assert_eq!(std::fs::read_dir(&lock_dir).expect("read dir").count(), 1);
    drop(guard);
    locks.lock("").await.expect_err("an empty key is refused");
}

// ---------------------------------------------------------------------------------------
// Igor store, against a real igor-iot 0.99.1
// ---------------------------------------------------------------------------------------

const WITH_CAPABILITIES: IgorOptions = IgorOptions { capabilities: true };

fn igor_store(igor: &Igor, user: &str, password: &str) -> IgorStore {
    IgorStore::new(
        IgorStoreConfig {
            url: igor.url.clone(),
            username: user.to_owned(),
            password: Secret::from(password.to_owned()),
            timeout: Duration::from_secs(20),
        },
        healthpull::http::HttpTransport::shared(),
    )
    .expect("igor store")
}

/// What a `GET` of `path` as XML answers, as admin.
async fn admin_xml(igor: &Igor, path: &str) -> String {
    let reply = igor
        .admin_get(&format!("/data/{path}"), "application/xml")
        .await;
    assert_eq!(reply.status, 200, "admin GET {path}: {reply:?}");
    assert_eq!(
        reply.content_type, "application/xml; charset=utf-8",
        "{path}"
    );
    reply.body
}

#[tokio::test]
async fn igor_store_writes_what_igor_itself_would_store() {
    let igor = Igor::shared(WITH_CAPABILITIES);
    let plugin = "hpwrite";
    let (user, password) = igor.service_identity(plugin, &["jack"]).await;
    let store = igor_store(igor, &user, &password);
    store.check_connection().await.expect("check connection");
    assert_eq!(store.kind(), "igor");

    let writes = [
        (format!("plugindata/{plugin}/client_id"), json!("0123456")),
        (
            format!("plugindata/{plugin}/client_secret"),
            json!("s3cr3t"),
        ),
        (
            format!("identities/jack/plugindata/{plugin}/token"),
            token(),
        ),
        (
            format!("identities/jack/plugindata/{plugin}/methods"),
            json!("get_bodyweight"),
        ),
        (format!("sensors/{plugin}/jack"), raw_weight()),
    ];
    for (path, value) in &writes {
        store
            .put(path, value)
            .await
            .unwrap_or_else(|error| panic!("put {path}: {error}"));
        let tag = path.rsplit('/').next().expect("tag");
        let expected = to_igor_xml(tag, value);
        assert_eq!(
            admin_xml(igor, path).await,
            format!("{expected}\n"),
            "{path}"
        );
        assert_eq!(
            store.export_xml(path).await.expect("export"),
            Some(expected),
            "{path}"
        );
    }
    assert_eq!(
        admin_xml(igor, &format!("sensors/{plugin}/jack")).await,
        format!("{RAW_WEIGHT_XML}\n")
    );
    store.save().await.expect("save");

    // Reads keep the stored text verbatim: a numeric-looking id stays a string.
    assert_eq!(
        store
            .get(&format!("plugindata/{plugin}/client_id"))
            .await
            .expect("get"),
        Some(json!("0123456"))
    );
    assert_eq!(
        store
            .get(&format!("identities/jack/plugindata/{plugin}"))
            .await
            .expect("get"),
        Some(json!({
            "token": {
                "access_token": "ACCESS", "refresh_token": "REFRESH", "expires_in": "28800",
                "scope": ["weight", "heartrate"], "token_type": "Bearer", "user_id": "7ABCDE",
                "expires_at": "1795537246.25"
            },
            "methods": "get_bodyweight"
        }))
    );
    assert_eq!(
        store
            .get(&format!("sensors/{plugin}/jill"))
            .await
            .expect("get"),
        None
    );

    // The plugin-owned containers kept their hidden owner attribute.
    for container in [format!("sensors/{plugin}"), format!("plugindata/{plugin}")] {
        let raw = igor
            .admin_get_ok(
                &format!("/data/{container}?.VARIANT=raw"),
                "application/xml",
            )
            .await;
        assert!(
            raw.contains(&format!("own:plugin=\"{plugin}\"")),
            "{container}: {raw}"
        );
    }
}

#[tokio::test]
async fn igor_store_creates_missing_parents_without_replacing_existing_ones() {
    let igor = Igor::shared(WITH_CAPABILITIES);
    let plugin = "hpparents";
    let (user, password) = igor.service_identity(plugin, &["jack"]).await;
    let store = igor_store(igor, &user, &password);

    // An existing element with hidden data, below which we write two new levels.
    igor.admin_put_ok(
        &format!("/data/sensors/{plugin}/deep"),
        "application/xml",
        "<deep xmlns:own=\"http://jackjansen.nl/igor/owner\" own:plugin=\"other\"><keep>1</keep></deep>",
    )
    .await;
    store
        .put(&format!("sensors/{plugin}/deep/a/b"), &json!({"leaf": 1}))
        .await
        .expect("put with missing parents");
    let raw = igor
        .admin_get_ok(
            &format!("/data/sensors/{plugin}/deep?.VARIANT=raw"),
            "application/xml",
        )
        .await;
    assert!(
        raw.contains("own:plugin=\"other\""),
        "an existing ancestor was replaced: {raw}"
    );
    assert_eq!(
        admin_xml(igor, &format!("sensors/{plugin}/deep")).await,
        "<deep><keep>1</keep><a><b><leaf>1</leaf></b></a></deep>\n"
    );

    // Replacing: the whole element, siblings untouched.
    store
        .put(&format!("sensors/{plugin}/jack"), &json!({"x": 1, "y": 2}))
        .await
        .expect("put");
    store
        .put(&format!("sensors/{plugin}/jack"), &json!({"z": 3}))
        .await
        .expect("replace");
    assert_eq!(
        store.get(&format!("sensors/{plugin}")).await.expect("get"),
        Some(json!({"deep": {"keep": "1", "a": {"b": {"leaf": "1"}}}, "jack": {"z": "3"}}))
    );

    store
        .delete(&format!("sensors/{plugin}/deep/a"))
        .await
        .expect("delete");
    assert_eq!(
        store
            .get(&format!("sensors/{plugin}/deep/a"))
            .await
            .expect("get"),
        None
    );
    store
        .delete(&format!("sensors/{plugin}/never"))
        .await
        .expect("deleting what is absent is fine");
    assert_eq!(
        store
            .export_xml(&format!("sensors/{plugin}/never"))
            .await
            .expect("export"),
        None
    );
}

#[tokio::test]
async fn igor_store_errors_name_method_status_and_igor_text() {
    let igor = Igor::shared(WITH_CAPABILITIES);
    let plugin = "hperrors";
    let (user, password) = igor.service_identity(plugin, &["jack"]).await;
    let store = igor_store(igor, &user, &password);

    // Replacing a plugin container needs `put` on itself, which the identity lacks.
    let error = store
        .put(&format!("plugindata/{plugin}"), &json!({}))
        .await
        .expect_err("no right");
    assert_eq!(
        error.to_string(),
        format!("igor PUT /data/plugindata/{plugin}: HTTP 401: 401 Unauthorized")
    );
    assert!(
        matches!(error, StoreError::IgorStatus { status: 401, .. }),
        "{error:?}"
    );

    // Outside its rights, with a parent to create: the parent's PUT is refused.
    let error = store
        .put("sensors/hpelsewhere/jack", &json!(1))
        .await
        .expect_err("no right");
    assert_eq!(
        error.to_string(),
        "cannot create the parents of sensors/hpelsewhere/jack in igor: \
         igor PUT /data/sensors/hpelsewhere: HTTP 401: 401 Unauthorized"
    );
    assert_eq!(
        igor.admin_get("/data/sensors/hpelsewhere", "application/xml")
            .await
            .status,
        404
    );

    let error = store.get("identities/jack").await.expect_err("no right");
    assert_eq!(
        error.to_string(),
        "igor GET /data/identities/jack: HTTP 401: 401 Unauthorized"
    );

    let error = store
        .put("sensors/x", &json!({"@a": 1}))
        .await
        .expect_err("attribute key");
    assert!(
        matches!(error, StoreError::Unrepresentable { .. }),
        "{error:?}"
    );

    // A wrong password: Igor 0.99.1 answers 500; the password appears nowhere.
    let wrong = "Wr0ngPassw0rd4711";
    let error = igor_store(igor, &user, wrong)
        .get(&format!("plugindata/{plugin}"))
        .await
        .expect_err("wrong password");
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains(wrong) && !shown.contains(&password),
        "{shown}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("igor GET /data/plugindata/{plugin}: HTTP 500: ")),
        "{error}"
    );
    let error = igor_store(igor, "nobody", wrong)
        .save()
        .await
        .expect_err("unknown user");
    assert_eq!(
        error.to_string(),
        "igor GET /internal/save: HTTP 501: 501 Database error: 0 users named nobody"
    );

    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let error = IgorStore::new(
        IgorStoreConfig {
            url: format!("http://127.0.0.1:{port}"),
            username: user.clone(),
            password: Secret::from(password.clone()),
            timeout: Duration::from_secs(5),
        },
        healthpull::http::HttpTransport::shared(),
    )
    .expect("store")
    .get("sensors/x")
    .await
    .expect_err("connection refused");
    assert!(
        error
            .to_string()
            .starts_with("igor GET /data/sensors/x: cannot connect"),
        "{error}"
    );
    assert!(!format!("{error:?}").contains(&password));
}

#[tokio::test]
async fn igor_without_capabilities_gets_every_missing_level_and_saves_on_stop() {
    let igor = Igor::start(IgorOptions {
        capabilities: false,
    });
    let store = igor_store(&igor, "anyone", "anything");
    store
        .put(
            "sensors/nocaps/jack/body-weight",
            &json!([{"value": 75.3}, {"value": 75.0}]),
        )
        .await
        .expect("put with three missing levels");
    store
        .put("sensors/nocaps/jack/other", &json!("x"))
        .await
        .expect("put");
    let list = to_igor_xml("body-weight", &json!([{"value": 75.3}, {"value": 75.0}]));
    assert_eq!(
        admin_xml(&igor, "sensors/nocaps").await,
        format!("<nocaps><jack>{list}<other>x</other></jack></nocaps>\n")
    );
    let saved = || {
        std::fs::read_to_string(igor.database_dir().join("database.xml"))
            .expect("the saved database")
    };
    assert!(
        !saved().contains("<nocaps>"),
        "igor saved sensors on its own"
    );
    store.save().await.expect("save");
    assert!(saved().contains("<other>x</other>"), "save did not save");
    // Written after the save: only the save of `/internal/stop` can keep it.
    store
        .put("sensors/nocaps/jack/after", &json!("stop"))
        .await
        .expect("put");

    let url = igor.url.clone();
    let port = igor.port;
    let log = igor.log.clone();
    igor.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "igor still listens at {url} after stop; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let saved = saved();
    assert!(
        saved.contains("<after>stop</after>"),
        "stop did not save: {saved}"
    );
    drop(igor);
}

// ---------------------------------------------------------------------------------------
// The store contract, run against every backend: embedded, Igor (a real igor-iot 0.99.1)
// and PostgreSQL (a real server, see support::postgres)
// ---------------------------------------------------------------------------------------

/// `xml` as Igor prints it back: an element without text or children as `<tag/>` (the
/// conversion of `null`, `false` and `""` writes `<tag></tag>`, which Igor stores and
/// then prints in the short form).
fn igor_printed(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(close) = rest.find("></") {
        let (before, after) = rest.split_at(close);
        let open = before.rfind('<').expect("an open tag");
        let name = before[open + 1..].split(' ').next().expect("a name");
        let end = format!("></{name}>");
        if !before[open..].starts_with("</") && after.starts_with(&end) {
            out.push_str(before);
            out.push_str("/>");
            rest = &after[end.len()..];
        } else {
            out.push_str(&rest[..close + 1]);
            rest = &rest[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// A store under test, with what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    /// The element every path of the test goes below (Igor's server is shared by tests).
    base: String,
    /// Whether reads give back the JSON written (embedded, PostgreSQL) rather than Igor's
    /// verbatim leaf text, which is then compared as the XML Igor prints.
    typed: bool,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Backend {
    /// `path` below the test's base element.
    fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Reads `path` (below the base) and checks it holds `expected`: exactly, key order
    /// and number text included, where reads are typed; as the same Igor XML elsewhere.
    async fn assert_holds(&self, path: &str, expected: Option<&Value>) {
        let full = self.at(path);
        let got = self
            .store
            .get(&full)
            .await
            .unwrap_or_else(|error| panic!("{} get {full}: {error}", self.store.kind()));
        self.assert_same(&full, got.as_ref(), expected);
    }

    /// The XML export of `value` under `tag`: Igor's conversion, as Igor prints it back
    /// where Igor holds the tree.
    fn expected_xml(&self, tag: &str, value: &Value) -> String {
        let xml = to_igor_xml(tag, value);
        if self.typed { xml } else { igor_printed(&xml) }
    }

    fn assert_same(&self, path: &str, got: Option<&Value>, expected: Option<&Value>) {
        let kind = self.store.kind();
        let tag = path.rsplit('/').next().expect("a tag");
        match (got, expected) {
            (Some(got), Some(expected)) if self.typed => {
                assert_eq!(got, expected, "{kind} {path}");
                assert_eq!(
                    serde_json::to_string(got).expect("json"),
                    serde_json::to_string(expected).expect("json"),
                    "{kind} {path}: key order and number text survive"
                );
            }
            (Some(got), Some(expected)) => assert_eq!(
                igor_printed(&to_igor_xml(tag, got)),
                igor_printed(&to_igor_xml(tag, expected)),
                "{kind} {path}"
            ),
            (got, expected) => assert_eq!(got, expected, "{kind} {path}"),
        }
    }
}

mod backend {
    use super::*;
    use crate::support::postgres::TestDatabase;

    pub async fn embedded(contract: &str) -> Option<Backend> {
        let (dir, store) = temp_store();
        Some(Backend {
            store: Arc::new(store),
            base: format!("sensors/{contract}"),
            typed: true,
            _keep: Box::new(dir),
        })
    }

    /// Igor without access control, shared by the tests: each contract writes below its
    /// own element, which is emptied first (a rerun in the same server starts clean).
    pub async fn igor(contract: &str) -> Option<Backend> {
        let igor = Igor::shared(IgorOptions {
            capabilities: false,
        });
        let store = igor_store(igor, "anyone", "anything");
        let base = format!("sensors/{contract}");
        store.delete(&base).await.expect("empty the test's element");
        Some(Backend {
            store: Arc::new(store),
            base,
            typed: false,
            _keep: Box::new(()),
        })
    }

    pub async fn postgres(contract: &str) -> Option<Backend> {
        let database = TestDatabase::create(&format!("store::{contract}::postgres")).await?;
        let store = healthpull::store::PostgresStore::connect(&database.url, 4)
            .await
            .unwrap_or_else(|error| panic!("connect to {}: {error}", database.name));
        Some(Backend {
            store: Arc::new(store),
            base: format!("sensors/{contract}"),
            typed: true,
            _keep: Box::new(database),
        })
    }
}

/// One test per backend named, each running the contract `$contract` on a fresh store.
macro_rules! contract {
    ($contract:ident: $($backend:ident),+) => {
        mod $contract {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $backend() {
                    if let Some(backend) = super::backend::$backend(stringify!($contract)).await {
                        super::$contract(backend).await;
                    }
                }
            )+
        }
    };
}

contract!(contract_round_trip: embedded, igor, postgres);
contract!(contract_put_replaces_subtree_keeps_siblings: embedded, igor, postgres);
contract!(contract_put_many_is_all_or_nothing: embedded, postgres);
contract!(contract_get_many_reads_in_order: embedded, igor, postgres);
contract!(contract_export_xml_is_igors: embedded, igor, postgres);
contract!(contract_refuses_bad_paths: embedded, igor, postgres);
contract!(contract_not_a_container: embedded, postgres);
contract!(contract_several_writers: embedded, igor, postgres);

/// Values come back as written; a leaf replaces an object; deletes are idempotent; a
/// parent assembles its children in the order they were created.
async fn contract_round_trip(b: Backend) {
    let path = b.at("jack/token");
    assert_eq!(b.store.get(&path).await.expect("get"), None);
    let value = json!({
        "token": token(),
        "numbers": [0, -3, 1551400000000_u64, 23.0, 75.3, 1e20, 18446744073709551615_u64],
        "flags": {"yes": true, "no": false, "nothing": null, "empty": "", "obj": {}},
        "nested": [[1, 2], {"a": [{"b": "007"}]}],
        "text": "<tag> & \"quotes\" é ☃"
    });
    b.store.put(&path, &value).await.expect("put");
    b.assert_holds("jack/token", Some(&value)).await;
    b.assert_holds("jack/token/token/user_id", Some(&json!("7ABCDE")))
        .await;
    b.assert_holds("jack/token/token/scope/x", None).await;
    if b.typed {
        // Igor stores a list as repeated elements, which a path cannot read as one.
        b.assert_holds(
            "jack/token/token/scope",
            Some(&json!(["weight", "heartrate"])),
        )
        .await;
        // Keys that are not element names (Igor keeps them in `_e` elements, which read
        // back as such) and text Igor cannot hold (NUL).
        let odd = json!({
            "1abc": 1, "a/b": 2, "~x": 3, "": 4, "_e": 5, "nul\u{0}key": 6, "a b": {"c": 7},
            "text": "nul \u{0} end"
        });
        b.store
            .put(&b.at("jack/odd"), &odd)
            .await
            .expect("put odd keys");
        b.assert_holds("jack/odd", Some(&odd)).await;
    }

    b.store
        .put(&path, &json!("just text"))
        .await
        .expect("put a leaf");
    b.assert_holds("jack/token", Some(&json!("just text")))
        .await;
    b.store.delete(&path).await.expect("delete");
    b.assert_holds("jack/token", None).await;
    b.store
        .delete(&path)
        .await
        .expect("deleting what is absent");
    b.store
        .delete(&b.at("never/was/here"))
        .await
        .expect("deleting what is absent");

    for (key, child) in [
        ("token", token()),
        ("methods", json!("get_bodyweight,get_bodyfat")),
        ("period", json!("1m")),
    ] {
        b.store
            .put(&b.at(&format!("jill/{key}")), &child)
            .await
            .expect("put a child");
    }
    let expected =
        json!({"token": token(), "methods": "get_bodyweight,get_bodyfat", "period": "1m"});
    b.assert_holds("jill", Some(&expected)).await;
    let jill = b
        .store
        .get(&b.at("jill"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        jill.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["token", "methods", "period"],
        "{}: children in the order they were created",
        b.store.kind()
    );
    b.store.save().await.expect("save");
}

/// A put replaces the whole subtree in its place among its siblings, creates missing
/// parents, and touches nothing else; an empty element takes children.
async fn contract_put_replaces_subtree_keeps_siblings(b: Backend) {
    let put = |path: &str, value: Value| {
        let store = Arc::clone(&b.store);
        let path = b.at(path);
        async move {
            store
                .put(&path, &value)
                .await
                .unwrap_or_else(|error| panic!("put {path}: {error}"));
        }
    };
    put("a/b", json!({"x": 1, "y": {"z": 2}})).await;
    put("a/c", json!(3)).await;
    put("a/b/y/w", json!(4)).await;
    b.assert_holds(
        "a",
        Some(&json!({"b": {"x": 1, "y": {"z": 2, "w": 4}}, "c": 3})),
    )
    .await;

    put("a/b", json!({"q": [1, 2]})).await;
    b.assert_holds("a", Some(&json!({"b": {"q": [1, 2]}, "c": 3})))
        .await;
    put("a/c", json!({"deeper": true})).await;
    if b.typed {
        put("a/b/q", json!("text")).await;
    } else {
        // Igor stores a list as repeated elements, which one path cannot replace.
        put("a/b", json!({"q": "text"})).await;
    }
    b.assert_holds(
        "a",
        Some(&json!({"b": {"q": "text"}, "c": {"deeper": true}})),
    )
    .await;

    put("a", json!({"only": 1})).await;
    b.assert_holds("a", Some(&json!({"only": 1}))).await;
    b.assert_holds("a/b", None).await;

    put("n", json!(null)).await;
    put("n/kid", json!(1)).await;
    b.assert_holds("n", Some(&json!({"kid": 1}))).await;
    put("e", json!("")).await;
    put("e/kid", json!(2)).await;
    b.assert_holds("e", Some(&json!({"kid": 2}))).await;

    b.store.delete(&b.at("a/only")).await.expect("delete");
    b.assert_holds("a", Some(&json!({}))).await;
    put("a/x", json!(1)).await;
    b.store.delete(&b.at("a")).await.expect("delete a subtree");
    b.assert_holds("a/x", None).await;
    b.assert_holds("n/kid", Some(&json!(1))).await;
}

/// A put_many writes every subtree or none (Igor has no transactions: not run there).
async fn contract_put_many_is_all_or_nothing(b: Backend) {
    b.store.put(&b.at("kept"), &json!(1)).await.expect("put");
    let tree = json!({"x": {"y": 2}});
    let status = json!("now");
    b.store
        .put_many(&[(&b.at("tree"), &tree), (&b.at("status/last"), &status)])
        .await
        .expect("both");
    b.assert_holds("tree", Some(&tree)).await;
    b.assert_holds("status/last", Some(&status)).await;

    // The third write cannot go below a number: the first two are not written either.
    let error = b
        .store
        .put_many(&[
            (&b.at("new"), &json!(3)),
            (&b.at("tree"), &json!("replaced")),
            (&b.at("kept/below"), &json!(4)),
        ])
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, StoreError::NotAContainer { ancestor, .. } if *ancestor == b.at("kept")),
        "{error}"
    );
    b.assert_holds("new", None).await;
    b.assert_holds("tree", Some(&tree)).await;
    b.assert_holds("kept", Some(&json!(1))).await;
    b.store.put_many(&[]).await.expect("nothing to write");
}

/// get_many answers each path in order, `None` for the absent ones.
async fn contract_get_many_reads_in_order(b: Backend) {
    let tree = json!({"x": {"y": 2}});
    b.store.put(&b.at("tree"), &tree).await.expect("put");
    b.store
        .put(&b.at("leaf"), &json!("text"))
        .await
        .expect("put");
    let paths = [b.at("leaf"), b.at("absent"), b.at("tree"), b.at("tree/x")];
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let values = b.store.get_many(&refs).await.expect("get_many");
    assert_eq!(values.len(), 4);
    let expected = [
        Some(json!("text")),
        None,
        Some(tree.clone()),
        Some(json!({"y": 2})),
    ];
    for ((path, got), expected) in paths.iter().zip(&values).zip(&expected) {
        b.assert_same(path, got.as_ref(), expected.as_ref());
    }
    let one = b.store.get_many(&[&b.at("leaf")]).await.expect("get_many");
    b.assert_same(&b.at("leaf"), one[0].as_ref(), Some(&json!("text")));
    assert!(b.store.get_many(&[]).await.expect("nothing").is_empty());
}

/// export_xml gives what Igor prints for the element (for Igor itself, what it stored).
async fn contract_export_xml_is_igors(b: Backend) {
    b.store
        .put(&b.at("jack"), &raw_weight())
        .await
        .expect("put");
    assert_eq!(
        b.store
            .export_xml(&b.at("jack"))
            .await
            .expect("export")
            .as_deref(),
        Some(RAW_WEIGHT_XML),
        "{}",
        b.store.kind()
    );
    let values = [
        ("token", token()),
        ("client_id", json!("0123456")),
        (
            "jill",
            json!({"body-weight": [{"value": 75.0, "dateTime": "2026-11-01"}, {"value": 74.5, "dateTime": "2026-11-02"}],
                   "a b": {"c": null}, "flags": [true, false], "none": [], "list": [[1, 2]]}),
        ),
        ("empty", json!({})),
        ("nothing", json!(null)),
        ("text", json!("<&> \"é\"")),
    ];
    for (tag, value) in &values {
        let path = b.at(tag);
        b.store.put(&path, value).await.expect("put");
        assert_eq!(
            b.store.export_xml(&path).await.expect("export"),
            Some(b.expected_xml(tag, value)),
            "{} {path}",
            b.store.kind()
        );
    }
    // A parent assembled from separate writes exports as one element.
    let mut parent = serde_json::Map::new();
    parent.insert("jack".to_owned(), raw_weight());
    for (tag, value) in &values {
        parent.insert((*tag).to_owned(), value.clone());
    }
    let tag = b.base.rsplit('/').next().expect("tag").to_owned();
    assert_eq!(
        b.store.export_xml(&b.base).await.expect("export"),
        Some(b.expected_xml(&tag, &Value::Object(parent))),
        "{}",
        b.store.kind()
    );
    assert_eq!(
        b.store.export_xml(&b.at("nobody")).await.expect("export"),
        None
    );
}

/// Paths that are not plain element names, and trees Igor cannot hold, are refused
/// before anything is written.
async fn contract_refuses_bad_paths(b: Backend) {
    for bad in ["", "/a", "a/", "a//b", "1abc", "a/b c", "a/b[1]", "a/../b"] {
        let message = b.store.get(bad).await.expect_err(bad).to_string();
        assert!(message.starts_with("invalid store path"), "{message}");
        b.store.put(bad, &json!(1)).await.expect_err(bad);
        b.store.delete(bad).await.expect_err(bad);
        b.store.export_xml(bad).await.expect_err(bad);
        b.store.get_many(&[bad]).await.expect_err(bad);
    }
    let path = b.at("attr");
    let error = b
        .store
        .put(&path, &json!({"@unit": "kg", "#text": "75.3"}))
        .await
        .expect_err("attributes cannot be written from JSON");
    assert!(
        matches!(error, StoreError::Unrepresentable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot store {path}: ")),
        "{error}"
    );
    b.assert_holds("attr", None).await;
}

/// A write below a stored list, number, string or `true` is refused, naming the
/// ancestor in the way (Igor applies its own rules there: not run on Igor).
async fn contract_not_a_container(b: Backend) {
    for (leaf, kind) in [
        (json!([1, 2]), "a list"),
        (json!(3), "a number"),
        (json!("text"), "a string"),
        (json!(true), "a boolean"),
    ] {
        b.store.put(&b.at("s/leaf"), &leaf).await.expect("put");
        let path = b.at("s/leaf/x/y");
        let error = b
            .store
            .put(&path, &json!(1))
            .await
            .expect_err("below a leaf");
        assert!(
            matches!(error, StoreError::NotAContainer { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "cannot write {path}: {} holds {kind}, not a container of elements",
                b.at("s/leaf")
            )
        );
        b.assert_holds("s/leaf", Some(&leaf)).await;
    }
}

/// Many tasks writing at once: every write lands whole, readers see whole children only,
/// and a parent created by several writers at once is created once.
async fn contract_several_writers(b: Backend) {
    const WRITERS: usize = 24;
    let store = Arc::clone(&b.store);
    // Igor creates a missing parent with a PUT that would replace one created meanwhile
    // (see IgorStore): the shared parents exist before the writers start.
    if !b.typed {
        store.put(&b.at("many"), &json!({})).await.expect("put");
        store.put(&b.at("shared"), &json!({})).await.expect("put");
    }
    let mut tasks = Vec::new();
    for index in 0..WRITERS {
        let store = Arc::clone(&store);
        let many = b.at("many");
        let shared = b.at("shared/last");
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    &format!("{many}/user{index}"),
                    &json!({"n": index, "all": [index, index]}),
                )
                .await?;
            store.put(&shared, &json!(index)).await?;
            if let Some(Value::Object(users)) = store.get(&many).await? {
                for (name, user) in users {
                    let n: u64 = match &user["n"] {
                        Value::String(text) => text.parse().expect("n"),
                        number => number.as_u64().expect("n"),
                    };
                    assert_eq!(name, format!("user{n}"), "a whole child");
                    assert_eq!(
                        to_igor_xml(&name, &user),
                        to_igor_xml(&name, &json!({"n": n, "all": [n, n]})),
                        "a whole child"
                    );
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("store operations");
    }
    let users = store
        .get(&b.at("many"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(users.as_object().expect("object").len(), WRITERS);
    for index in 0..WRITERS {
        b.assert_holds(
            &format!("many/user{index}"),
            Some(&json!({"n": index, "all": [index, index]})),
        )
        .await;
    }
    let last = store
        .get(&b.at("shared/last"))
        .await
        .expect("get")
        .expect("present");
    let last = match last {
        Value::String(text) => text.parse::<usize>().expect("a number"),
        number => number.as_u64().expect("a number") as usize,
    };
    assert!(last < WRITERS, "{last}");
}

// ---------------------------------------------------------------------------------------
// The archive contract, run against the embedded archive (also the Igor store's, an
// embedded file beside it) and PostgreSQL's tables
// ---------------------------------------------------------------------------------------

/// Two handles on one archive (two opens of the file, two stores on the database), as
/// two processes have them.
struct ArchiveBackend {
    first: Arc<dyn Archive>,
    second: Arc<dyn Archive>,
    _keep: Box<dyn std::any::Any + Send>,
}

mod archive_backend {
    use super::*;
    use crate::support::postgres::TestDatabase;
    use healthpull::store::PostgresStore;

    pub async fn embedded(_contract: &str) -> Option<ArchiveBackend> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("archive.db");
        let open = || SqliteStore::open(&file).expect("open the archive");
        Some(ArchiveBackend {
            first: Arc::new(open()),
            second: Arc::new(open()),
            _keep: Box::new(dir),
        })
    }

    pub async fn postgres(contract: &str) -> Option<ArchiveBackend> {
        let database = TestDatabase::create(&format!("store::{contract}::postgres")).await?;
        let open = || async {
            PostgresStore::connect(&database.url, 4)
                .await
                .unwrap_or_else(|error| panic!("connect to {}: {error}", database.name))
        };
        Some(ArchiveBackend {
            first: Arc::new(open().await),
            second: Arc::new(open().await),
            _keep: Box::new(database),
        })
    }
}

/// One test per backend named, each running the archive contract `$contract`.
macro_rules! archive_contract {
    ($contract:ident: $($backend:ident),+) => {
        mod $contract {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $backend() {
                    if let Some(backend) =
                        super::archive_backend::$backend(stringify!($contract)).await
                    {
                        super::$contract(backend).await;
                    }
                }
            )+
        }
    };
}

archive_contract!(archive_entries_are_kept_once_changed_in_place_and_deleted: embedded, postgres);
archive_contract!(archive_selections_and_order: embedded, postgres);
archive_contract!(archive_coverage_across_commits: embedded, postgres);
archive_contract!(archive_statuses: embedded, postgres);
archive_contract!(archive_budgets_are_shared_and_never_exceeded: embedded, postgres);
archive_contract!(archive_forget_removes_one_user: embedded, postgres);
archive_contract!(archive_concurrent_commits_keep_the_union: embedded, postgres);

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a day")
}

/// A weighing on `date`, identified by its log id.
fn weighing(id: u64, date: &str, kg: f64) -> NewEntry {
    NewEntry {
        output: "body-weight".into(),
        identity: format!("[{id}]"),
        at: Some(format!("{date}T07:00:00")),
        day: Some(day(date)),
        value: json!({"value": kg, "dateTime": date, "logId": id}),
    }
}

/// A window of `get_bodyweight` for fitbit/jack, fetched long after its days settled.
fn window_commit(window: (&str, &str), entries: Vec<NewEntry>) -> Commit {
    Commit {
        plugin: "fitbit".into(),
        user: "jack".into(),
        method: "get_bodyweight".into(),
        window: Some((day(window.0), day(window.1))),
        fetched_at: "2027-01-01T00:00:00Z".parse().expect("an instant"),
        zone: chrono_tz::UTC,
        settle: chrono::Duration::days(2),
        deletions: true,
        entries,
    }
}

fn counts(added: u64, changed: u64, unchanged: u64, removed: u64) -> Counts {
    Counts {
        added,
        changed,
        unchanged,
        removed,
    }
}

async fn weights(archive: &dyn Archive, select: Select) -> Vec<Value> {
    archive
        .entries("fitbit", "jack", "body-weight", select)
        .await
        .expect("entries")
        .into_iter()
        .map(|entry| entry.value["value"].clone())
        .collect()
}

/// Entries are kept once by identity, replaced when their value changes, removed when a
/// non-empty answer of their window no longer lists them; an empty answer, a method
/// without deletions and whole outputs remove nothing.
async fn archive_entries_are_kept_once_changed_in_place_and_deleted(b: ArchiveBackend) {
    let archive = &*b.first;
    let first = vec![
        weighing(1, "2026-11-01", 80.0),
        weighing(2, "2026-11-02", 79.5),
        weighing(3, "2026-11-03", 79.0),
        weighing(4, "2026-11-04", 78.9),
    ];
    let window = ("2026-11-01", "2026-11-03");
    let done = archive
        .commit(window_commit(window, first.clone()))
        .await
        .expect("commit");
    assert_eq!(done, counts(4, 0, 0, 0));
    let done = archive
        .commit(window_commit(window, first))
        .await
        .expect("commit");
    assert_eq!(done, counts(0, 0, 4, 0), "the same entries again");
    // Fetched again: one the same, one changed, one gone (the 4th is outside the window).
    let again = vec![
        weighing(1, "2026-11-01", 80.0),
        weighing(3, "2026-11-03", 78.8),
    ];
    let done = archive
        .commit(window_commit(window, again))
        .await
        .expect("commit");
    assert_eq!(done, counts(0, 1, 1, 1));
    // An empty answer deletes nothing.
    let done = archive
        .commit(window_commit(window, Vec::new()))
        .await
        .expect("commit");
    assert_eq!(done, Counts::default());
    assert_eq!(
        weights(archive, Select::Since(None)).await,
        [json!(80.0), json!(78.8), json!(78.9)]
    );
    // Without deletions, entries an answer leaves out stay.
    let mut kept = window_commit(window, vec![weighing(5, "2026-11-02", 79.4)]);
    kept.deletions = false;
    assert_eq!(
        archive.commit(kept).await.expect("commit"),
        counts(1, 0, 0, 0)
    );
    assert_eq!(
        weights(archive, Select::Since(None)).await,
        [json!(80.0), json!(79.4), json!(78.8), json!(78.9)]
    );
    // The same identity under another method is another entry; a whole output (no
    // time) is replaced by the next one and never deleted by a window.
    let mut other = window_commit(window, vec![weighing(1, "2026-11-01", 80.0)]);
    other.method = "get_bodyweight_log".into();
    assert_eq!(
        archive.commit(other).await.expect("commit"),
        counts(1, 0, 0, 0)
    );
    let whole = |model: &str| NewEntry {
        output: "devices".into(),
        identity: String::new(),
        at: None,
        day: None,
        value: json!([{"model": model}]),
    };
    let mut devices = window_commit(window, vec![whole("Aria")]);
    devices.method = "get_devices".into();
    devices.window = None;
    assert_eq!(
        archive.commit(devices.clone()).await.expect("commit"),
        counts(1, 0, 0, 0)
    );
    devices.entries = vec![whole("Aria Air")];
    assert_eq!(
        archive.commit(devices).await.expect("commit"),
        counts(0, 1, 0, 0)
    );
    let devices = archive
        .entries(
            "fitbit",
            "jack",
            "devices",
            Select::Days(day("2026-11-01"), day("2026-11-01")),
        )
        .await
        .expect("entries");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].value, json!([{"model": "Aria Air"}]));
    assert_eq!((devices[0].at.as_deref(), devices[0].day), (None, None));
    assert_eq!(devices[0].method, "get_devices");
    assert_eq!(
        archive.outputs("fitbit", "jack").await.expect("outputs"),
        ["body-weight", "devices"]
    );
    // The second handle reads what the first wrote.
    assert_eq!(
        weights(&*b.second, Select::Since(None)).await,
        [
            json!(80.0),
            json!(80.0),
            json!(79.4),
            json!(78.8),
            json!(78.9)
        ]
    );
}

/// `Days` (inclusive), `Since` and `Last` select entries of every method of an output,
/// sorted by time with whole outputs first and ties in answer order; values come back as
/// written.
async fn archive_selections_and_order(b: ArchiveBackend) {
    let archive = &*b.first;
    let mut first = window_commit(
        ("2026-11-01", "2026-11-05"),
        vec![
            weighing(5, "2026-11-05", 75.0),
            weighing(3, "2026-11-03", 73.0),
            weighing(1, "2026-11-01", 71.0),
            // Two at the same time: answer order.
            weighing(22, "2026-11-02", 72.2),
            weighing(21, "2026-11-02", 72.1),
        ],
    );
    first.entries[0].value =
        serde_json::from_str(r#"{"value": 75.0, "big": 1e20, "z": 1, "a": 2}"#).expect("json");
    archive.commit(first).await.expect("commit");
    let mut other = window_commit(
        ("2026-11-04", "2026-11-04"),
        vec![weighing(4, "2026-11-04", 74.0)],
    );
    other.method = "get_bodyweight_log".into();
    archive.commit(other).await.expect("commit");
    let mut whole = window_commit(
        ("2026-11-01", "2026-11-01"),
        vec![NewEntry {
            output: "body-weight".into(),
            identity: String::new(),
            at: None,
            day: None,
            value: json!({"value": "goal"}),
        }],
    );
    whole.method = "get_goal".into();
    whole.window = None;
    archive.commit(whole).await.expect("commit");

    assert_eq!(
        weights(archive, Select::Since(None)).await,
        [
            json!("goal"),
            json!(71.0),
            json!(72.2),
            json!(72.1),
            json!(73.0),
            json!(74.0),
            json!(75.0)
        ]
    );
    assert_eq!(
        weights(archive, Select::Since(Some(day("2026-11-04")))).await,
        [json!("goal"), json!(74.0), json!(75.0)]
    );
    assert_eq!(
        weights(archive, Select::Days(day("2026-11-02"), day("2026-11-03"))).await,
        [json!("goal"), json!(72.2), json!(72.1), json!(73.0)]
    );
    assert_eq!(
        weights(archive, Select::Days(day("2026-12-01"), day("2026-12-31"))).await,
        [json!("goal")]
    );
    assert_eq!(
        weights(archive, Select::Last(3)).await,
        [json!("goal"), json!(73.0), json!(74.0), json!(75.0)]
    );
    assert_eq!(
        weights(archive, Select::Last(1)).await,
        [json!("goal"), json!(75.0)]
    );
    let all = archive
        .entries("fitbit", "jack", "body-weight", Select::Last(100))
        .await
        .expect("entries");
    assert_eq!(all.len(), 7);
    let methods: Vec<&str> = all.iter().map(|entry| entry.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "get_goal",
            "get_bodyweight",
            "get_bodyweight",
            "get_bodyweight",
            "get_bodyweight",
            "get_bodyweight_log",
            "get_bodyweight"
        ]
    );
    let last = all.last().expect("an entry");
    assert_eq!(
        (last.at.as_deref(), last.day),
        (Some("2026-11-05T07:00:00"), Some(day("2026-11-05")))
    );
    assert_eq!(
        serde_json::to_string(&last.value).expect("json"),
        r#"{"value":75.0,"big":1e+20,"z":1,"a":2}"#,
        "key order and number text survive"
    );
    // Other users, plugins and outputs hold nothing.
    for (plugin, user, output) in [
        ("fitbit", "jill", "body-weight"),
        ("oura", "jack", "body-weight"),
        ("fitbit", "jack", "sleep"),
    ] {
        let none = archive
            .entries(plugin, user, output, Select::Since(None))
            .await
            .expect("entries");
        assert!(none.is_empty(), "{plugin}/{user}/{output}: {none:?}");
    }
}

/// Coverage adds up across commits and handles, per method; settled neighbours merge; a
/// method without history covers nothing.
async fn archive_coverage_across_commits(b: ArchiveBackend) {
    let coverage = |archive: Arc<dyn Archive>, method: &'static str| async move {
        archive
            .coverage("fitbit", "jack", method)
            .await
            .expect("coverage")
            .spans()
            .iter()
            .map(|span| (span.start, span.end))
            .collect::<Vec<_>>()
    };
    assert_eq!(coverage(b.first.clone(), "get_bodyweight").await, []);
    b.first
        .commit(window_commit(("2026-11-01", "2026-11-03"), Vec::new()))
        .await
        .expect("commit");
    b.second
        .commit(window_commit(("2026-11-06", "2026-11-08"), Vec::new()))
        .await
        .expect("commit");
    assert_eq!(
        coverage(b.first.clone(), "get_bodyweight").await,
        [
            (day("2026-11-01"), day("2026-11-03")),
            (day("2026-11-06"), day("2026-11-08"))
        ]
    );
    b.first
        .commit(window_commit(("2026-11-04", "2026-11-05"), Vec::new()))
        .await
        .expect("commit");
    assert_eq!(
        coverage(b.second.clone(), "get_bodyweight").await,
        [(day("2026-11-01"), day("2026-11-08"))]
    );
    let stored = b
        .second
        .coverage("fitbit", "jack", "get_bodyweight")
        .await
        .expect("coverage");
    assert_eq!(
        stored.spans()[0].fetched_at,
        "2027-01-01T00:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .expect("an instant")
    );
    // Days fetched before they settled stay apart from the settled span.
    let mut fresh = window_commit(("2026-12-30", "2026-12-31"), Vec::new());
    fresh.fetched_at = "2027-01-01T00:00:00Z".parse().expect("an instant");
    let mut recent = window_commit(("2026-11-09", "2026-11-09"), Vec::new());
    recent.fetched_at = "2026-11-09T12:00:00Z".parse().expect("an instant");
    b.first.commit(fresh).await.expect("commit");
    b.first.commit(recent).await.expect("commit");
    assert_eq!(
        coverage(b.first.clone(), "get_bodyweight").await,
        [
            (day("2026-11-01"), day("2026-11-08")),
            (day("2026-11-09"), day("2026-11-09")),
            (day("2026-12-30"), day("2026-12-31"))
        ]
    );
    let mut no_history = window_commit(("2026-11-01", "2026-11-01"), Vec::new());
    no_history.method = "get_profile".into();
    no_history.window = None;
    b.first.commit(no_history).await.expect("commit");
    assert_eq!(coverage(b.first.clone(), "get_profile").await, []);
    assert_eq!(coverage(b.first.clone(), "get_sleep").await, []);
}

/// A method's status record is replaced by the next; statuses come sorted by method.
async fn archive_statuses(b: ArchiveBackend) {
    let archive = &*b.first;
    assert!(
        archive
            .statuses("fitbit", "jack")
            .await
            .expect("statuses")
            .is_empty()
    );
    let put = |method: &'static str, status: Value| async move {
        archive
            .put_status("fitbit", "jack", method, &status)
            .await
            .expect("put status")
    };
    put("get_sleep", json!({"kind": "sync", "ok": true})).await;
    put("get_bodyweight", json!({"kind": "backfill", "done": 3})).await;
    put(
        "get_sleep",
        json!({"kind": "fetch", "ok": false, "error": "HTTP 500"}),
    )
    .await;
    b.first
        .put_status("fitbit", "jill", "get_sleep", &json!({"kind": "sync"}))
        .await
        .expect("put status");
    let statuses = b.second.statuses("fitbit", "jack").await.expect("statuses");
    assert_eq!(
        statuses,
        [
            (
                "get_bodyweight".to_owned(),
                json!({"kind": "backfill", "done": 3})
            ),
            (
                "get_sleep".to_owned(),
                json!({"kind": "fetch", "ok": false, "error": "HTTP 500"})
            ),
        ]
    );
}

/// A budget's calls are counted in a sliding window every handle shares; tasks taking
/// calls at once never get more than the limit together.
async fn archive_budgets_are_shared_and_never_exceeded(b: ArchiveBackend) {
    let (a, c) = (&*b.first, &*b.second);
    assert_eq!(a.calls_left("k", 2, 60.0, 1000.0).await.expect("left"), 2);
    assert_eq!(
        a.next_call_at("k", 2, 60.0, 1000.0).await.expect("next"),
        None
    );
    assert_eq!(
        a.take_call("k", 2, 60.0, 1000.0).await.expect("take"),
        Ok(())
    );
    assert_eq!(
        c.take_call("k", 2, 60.0, 1001.0).await.expect("take"),
        Ok(())
    );
    assert_eq!(
        a.take_call("k", 2, 60.0, 1002.0).await.expect("take"),
        Err(1060.0)
    );
    assert_eq!(c.calls_left("k", 2, 60.0, 1002.0).await.expect("left"), 0);
    assert_eq!(
        c.next_call_at("k", 2, 60.0, 1002.0).await.expect("next"),
        Some(1060.0)
    );
    assert_eq!(
        c.calls_left("other", 2, 60.0, 1002.0).await.expect("left"),
        2
    );
    // The first call leaves the window: one call again.
    assert_eq!(c.calls_left("k", 2, 60.0, 1060.5).await.expect("left"), 1);
    assert_eq!(
        c.next_call_at("k", 2, 60.0, 1060.5).await.expect("next"),
        None
    );
    assert_eq!(
        c.take_call("k", 2, 60.0, 1060.5).await.expect("take"),
        Ok(())
    );
    assert_eq!(
        a.next_call_at("k", 2, 60.0, 1060.6).await.expect("next"),
        Some(1061.0)
    );

    // Four tasks on the two handles take calls of ten budgets at once, each trying
    // twice the budget's limit: every budget grants its limit, never more.
    const LIMIT: u32 = 3;
    const BUDGETS: usize = 10;
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let archive = Arc::clone(if task % 2 == 0 { &b.first } else { &b.second });
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            archive
                .calls_left("shared-0", LIMIT, 3600.0, 5000.0)
                .await
                .expect("left");
            start.wait().await;
            let mut taken = [0; BUDGETS];
            for (budget, taken) in taken.iter_mut().enumerate() {
                for attempt in 0..LIMIT * 2 {
                    let now = 5000.0 + f64::from(attempt) * 0.001;
                    if archive
                        .take_call(&format!("shared-{budget}"), LIMIT, 3600.0, now)
                        .await
                        .expect("take")
                        .is_ok()
                    {
                        *taken += 1;
                    }
                }
            }
            taken
        }));
    }
    let mut taken = [0; BUDGETS];
    for task in tasks {
        for (total, count) in taken.iter_mut().zip(task.await.expect("task")) {
            *total += count;
        }
    }
    assert_eq!(taken, [LIMIT; BUDGETS], "each budget grants {LIMIT} calls");
    for budget in 0..BUDGETS {
        assert_eq!(
            b.second
                .calls_left(&format!("shared-{budget}"), LIMIT, 3600.0, 5001.0)
                .await
                .expect("left"),
            0
        );
    }
}

/// Forgetting a user removes their entries, coverage and statuses, and nobody else's.
async fn archive_forget_removes_one_user(b: ArchiveBackend) {
    let archive = &*b.first;
    for user in ["jack", "jill"] {
        let mut commit = window_commit(
            ("2026-11-01", "2026-11-02"),
            vec![weighing(1, "2026-11-01", 80.0)],
        );
        commit.user = user.into();
        archive.commit(commit).await.expect("commit");
        archive
            .put_status("fitbit", user, "get_bodyweight", &json!({"ok": true}))
            .await
            .expect("status");
    }
    b.second.forget("fitbit", "jack").await.expect("forget");
    assert!(weights(archive, Select::Since(None)).await.is_empty());
    assert!(
        archive
            .outputs("fitbit", "jack")
            .await
            .expect("outputs")
            .is_empty()
    );
    assert!(
        archive
            .statuses("fitbit", "jack")
            .await
            .expect("statuses")
            .is_empty()
    );
    assert!(
        archive
            .coverage("fitbit", "jack", "get_bodyweight")
            .await
            .expect("coverage")
            .is_empty()
    );
    assert_eq!(
        archive.outputs("fitbit", "jill").await.expect("outputs"),
        ["body-weight"]
    );
    assert_eq!(
        archive
            .statuses("fitbit", "jill")
            .await
            .expect("statuses")
            .len(),
        1
    );
    assert!(
        !archive
            .coverage("fitbit", "jill", "get_bodyweight")
            .await
            .expect("coverage")
            .is_empty()
    );
    // Forgotten, the same entry is new again.
    let again = archive
        .commit(window_commit(
            ("2026-11-01", "2026-11-02"),
            vec![weighing(1, "2026-11-01", 80.0)],
        ))
        .await
        .expect("commit");
    assert_eq!(again, counts(1, 0, 0, 0));
}

/// Two handles committing overlapping windows of one method at once: the coverage is the
/// union of the windows and every entry is archived (and counted as added) once.
async fn archive_concurrent_commits_keep_the_union(b: ArchiveBackend) {
    const DAYS: i64 = 40;
    let start = day("2026-09-01");
    let date = move |offset: i64| start + chrono::Duration::days(offset);
    let window = move |first: i64| {
        let (from, to) = (date(first), date((first + 3).min(DAYS - 1)));
        let entries = (first..=(first + 3).min(DAYS - 1))
            .map(|offset| weighing(offset as u64, &date(offset).to_string(), 70.0))
            .collect();
        let mut commit = window_commit(("2026-01-01", "2026-01-01"), entries);
        commit.window = Some((from, to));
        commit
    };
    // One handle walks the days up by windows of four, the other down, shifted by two:
    // every day is in two or more windows, committed from both sides at once.
    let up = Arc::clone(&b.first);
    let down = Arc::clone(&b.second);
    let walk_up = tokio::spawn(async move {
        let mut total = Counts::default();
        for first in (0..DAYS).step_by(4) {
            total.add(up.commit(window(first)).await.expect("commit"));
        }
        total
    });
    let walk_down = tokio::spawn(async move {
        let mut total = Counts::default();
        for first in (0..DAYS).step_by(4).collect::<Vec<_>>().into_iter().rev() {
            total.add(
                down.commit(window((first + 2).min(DAYS - 1)))
                    .await
                    .expect("commit"),
            );
        }
        total
    });
    let mut total = walk_up.await.expect("task");
    total.add(walk_down.await.expect("task"));
    assert_eq!(total.added, DAYS as u64, "{total:?}");
    assert_eq!((total.changed, total.removed), (0, 0), "{total:?}");
    let entries = b
        .first
        .entries("fitbit", "jack", "body-weight", Select::Since(None))
        .await
        .expect("entries");
    let ids: Vec<u64> = entries
        .iter()
        .map(|entry| entry.value["logId"].as_u64().expect("an id"))
        .collect();
    assert_eq!(ids, (0..DAYS as u64).collect::<Vec<_>>());
    let coverage = b
        .second
        .coverage("fitbit", "jack", "get_bodyweight")
        .await
        .expect("coverage");
    let spans: Vec<(NaiveDate, NaiveDate)> = coverage
        .spans()
        .iter()
        .map(|span| (span.start, span.end))
        .collect();
    assert_eq!(spans, [(date(0), date(DAYS - 1))]);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL store: schema, migrations, configuration and errors
// ---------------------------------------------------------------------------------------

mod postgres {
    use super::*;
    use crate::support::postgres::TestDatabase;
    use healthpull::store::PostgresStore;

    #[tokio::test]
    async fn rows_hold_json_text_paths_and_sibling_order() {
        let Some(database) = TestDatabase::create("store::postgres::rows").await else {
            return;
        };
        let store = PostgresStore::connect(&database.url, 2)
            .await
            .expect("connect");
        assert_eq!(store.kind(), "postgres");
        // Leaves hold serde_json's text of the value, read back as the same value.
        let written: Value =
            serde_json::from_str(r#"{"n": 1e20, "odd key": [1, "x"], "t": "007"}"#).expect("json");
        store.put("a/b", &written).await.expect("put");
        store.put("a/c", &json!(null)).await.expect("put");
        let client = database.client().await;
        let rows: Vec<(String, String, i64, Option<String>)> = client
            .query(
                "SELECT path, parent, ord, value FROM healthpull_nodes ORDER BY path",
                &[],
            )
            .await
            .expect("select")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect();
        let row = |path: &str, parent: &str, ord: i64, value: Option<&str>| {
            (
                path.to_owned(),
                parent.to_owned(),
                ord,
                value.map(str::to_owned),
            )
        };
        assert_eq!(
            rows,
            [
                row("a", "", 0, None),
                row("a/b", "a", 0, None),
                row("a/b/n", "a/b", 0, Some("1e+20")),
                row("a/b/t", "a/b", 2, Some("\"007\"")),
                row("a/b/~odd%20key", "a/b", 1, Some("[1,\"x\"]")),
                row("a/c", "a", 1, Some("null")),
            ]
        );
        // The pool is there for tables kept beside the tree.
        let pooled = store.pool().get().await.expect("a pooled connection");
        let count: i64 = pooled
            .query_one("SELECT count(*) FROM healthpull_nodes", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(count, 6);
        assert_eq!(store.get("a/b").await.expect("get"), Some(written));
    }

    /// The archive's rows: keyed by plugin, user, output, method and identity, the entry's
    /// JSON text as written; coverage as days and the fetch's instant; calls by key.
    #[tokio::test]
    async fn archive_rows_live_in_the_database_beside_the_tree() {
        let Some(database) = TestDatabase::create("store::postgres::archive_rows").await else {
            return;
        };
        let store = PostgresStore::connect(&database.url, 2)
            .await
            .expect("connect");
        let mut entry = weighing(7, "2026-11-02", 80.0);
        entry.value = serde_json::from_str(r#"{"value": 80.0, "n": 1e20}"#).expect("json");
        store
            .commit(window_commit(("2026-11-01", "2026-11-03"), vec![entry]))
            .await
            .expect("commit");
        store
            .put_status("fitbit", "jack", "get_bodyweight", &json!({"ok": true}))
            .await
            .expect("status");
        assert_eq!(
            store
                .take_call("fitbit:jack", 3, 60.0, 1000.5)
                .await
                .expect("take"),
            Ok(())
        );
        let client = database.client().await;
        let row = client
            .query_one(
                "SELECT plugin, user_name, output, method, identity, day, at, seq, value
                 FROM healthpull_archive_entries",
                &[],
            )
            .await
            .expect("one entry");
        let texts: Vec<Option<String>> = (0..7).map(|column| row.get(column)).collect();
        assert_eq!(
            texts,
            [
                "fitbit",
                "jack",
                "body-weight",
                "get_bodyweight",
                "[7]",
                "2026-11-02",
                "2026-11-02T07:00:00"
            ]
            .map(|text| Some(text.to_owned()))
        );
        assert_eq!(row.get::<_, i64>(7), 0);
        assert_eq!(row.get::<_, String>(8), r#"{"value":80.0,"n":1e+20}"#);
        let span = client
            .query_one(
                "SELECT start_day, end_day, fetched_at FROM healthpull_archive_coverage
                 WHERE plugin = 'fitbit' AND user_name = 'jack' AND method = 'get_bodyweight'",
                &[],
            )
            .await
            .expect("one span");
        assert_eq!(
            (span.get::<_, String>(0), span.get::<_, String>(1)),
            ("2026-11-01".to_owned(), "2026-11-03".to_owned())
        );
        assert_eq!(span.get::<_, String>(2), "2027-01-01T00:00:00+00:00");
        let record: String = client
            .query_one("SELECT record FROM healthpull_archive_status", &[])
            .await
            .expect("one status")
            .get(0);
        assert_eq!(record, r#"{"ok":true}"#);
        let call: (String, f64) = client
            .query_one("SELECT key, at FROM healthpull_budget_calls", &[])
            .await
            .map(|row| (row.get(0), row.get(1)))
            .expect("one call");
        assert_eq!(call, ("fitbit:jack".to_owned(), 1000.5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_starting_together_migrate_once() {
        let Some(database) = TestDatabase::create("store::postgres::migrate").await else {
            return;
        };
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let url = database.url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url, 1).await })
            })
            .collect();
        for start in starts {
            start.await.expect("task").expect("migrated");
        }
        let client = database.client().await;
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM healthpull_migrations ORDER BY version",
                &[],
            )
            .await
            .expect("select")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(versions, [1, 2]);
        // A later start applies nothing and keeps the data.
        let store = PostgresStore::connect(&database.url, 1)
            .await
            .expect("connect");
        store.put("a", &json!(1)).await.expect("put");
        let again = PostgresStore::connect(&database.url, 1)
            .await
            .expect("again");
        assert_eq!(again.get("a").await.expect("get"), Some(json!(1)));

        // A database written by a newer healthpull is refused, naming the versions.
        client
            .execute(
                "INSERT INTO healthpull_migrations (version) VALUES (99)",
                &[],
            )
            .await
            .expect("insert");
        let error = PostgresStore::connect(&database.url, 1)
            .await
            .expect_err("newer schema");
        assert!(
            matches!(error, StoreError::PostgresSchema { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with("schema version 99 is newer than this healthpull understands (2)"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn errors_name_the_database_but_never_the_password() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let password = "Pg5ecretPassw0rd";
        let url = format!("postgresql://hp:{password}@127.0.0.1:{port}/health");
        let store = PostgresStore::new(&url, 2).expect("no connection is made yet");
        let error = store.get("sensors/x").await.expect_err("nobody listens");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(password), "{shown}");
        assert!(
            error.to_string().starts_with(&format!(
                "postgres store hp@127.0.0.1:{port}/health: cannot migrate the schema: no connection: "
            )),
            "{error}"
        );
        assert!(!format!("{store:?}").contains(password));

        let error = PostgresStore::new(&format!("postgresql://hp:{password}@db:port/x"), 2)
            .expect_err("bad port");
        assert!(
            !format!("{error} {error:?}").contains(password),
            "{error:?}"
        );
    }

    /// The binary with `store: {kind: postgres}`: writes through the configured URL
    /// variable and reads back what it wrote.
    #[tokio::test]
    async fn the_configured_store_is_used_by_the_commands() {
        let Some(database) = TestDatabase::create("store::postgres::configured").await else {
            return;
        };
        let sandbox = crate::support::env::Sandbox::new();
        let config = format!(
            "providers_dir: {}\nstore: {{kind: postgres, url_env: HP_TEST_DB, pool: 2}}\n",
            serde_json::to_string(&crate::support::env::root().join("providers"))
                .expect("a path as JSON")
        );
        std::fs::write(sandbox.config(), config).expect("write the config");
        let run = |args: &[&str]| {
            let output = sandbox
                .command()
                .args(args)
                .env("HP_TEST_DB", &database.url)
                .env_remove("HEALTHPULL_DATABASE_URL")
                .output()
                .expect("run healthpull");
            (
                output.status,
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let (status, _, stderr) = run(&["settings", "withings", "--client-id", "0123456"]);
        assert!(status.success(), "settings: {stderr}");
        let (status, stdout, stderr) = run(&["export", "plugindata/withings/client_id"]);
        assert!(status.success(), "export: {stderr}");
        assert_eq!(stdout, "<client_id>0123456</client_id>\n");
        let store = PostgresStore::connect(&database.url, 1)
            .await
            .expect("connect");
        assert_eq!(
            store
                .get("plugindata/withings/client_id")
                .await
                .expect("get"),
            Some(json!("0123456"))
        );

        // The archive is the database's: what a store archived, `history` lists, and
        // no embedded archive file appears.
        let mut commit = window_commit(
            ("2026-11-01", "2026-11-01"),
            vec![weighing(3, "2026-11-01", 81.5)],
        );
        commit.plugin = "withings".into();
        store.commit(commit).await.expect("commit");
        let (status, stdout, stderr) = run(&[
            "history",
            "withings",
            "--user",
            "jack",
            "--output",
            "body-weight",
            "--format",
            "jsonl",
        ]);
        assert!(status.success(), "history: {stderr}");
        assert_eq!(
            stdout,
            "{\"value\":81.5,\"dateTime\":\"2026-11-01\",\"logId\":3}\n"
        );
        let files: Vec<_> = std::fs::read_dir(sandbox.dir.path())
            .expect("the sandbox")
            .map(|entry| entry.expect("an entry").file_name())
            .filter(|name| name.to_string_lossy().contains("archive"))
            .collect();
        assert!(files.is_empty(), "{files:?}");

        let output = sandbox
            .command()
            .args(["export", "plugindata"])
            .env_remove("HP_TEST_DB")
            .output()
            .expect("run healthpull");
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr)
                .contains("the postgres url is read from $HP_TEST_DB, which is not set"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
