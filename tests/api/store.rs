//! The store conformance suite: every store operation with a rule attached,
//! on SQLite and on PostgreSQL, through the same API.

use std::collections::HashSet;

use latchkey::store::{
    CeremonyKind, Hit, MailKind, Method, NewCeremony, NewIdempotencyKey, NewMail, NewPasskey,
    NewSession, NewSigningKey, PasskeyUse, SessionEnd, SessionStage, Store, StoreOptions,
    UserQuery,
};

use crate::both_backends;
use crate::helpers::{Backend, TestDb};

both_backends!(
    migrations_apply_twice_and_make_the_store_ready,
    code_attempts_stop_exactly_at_the_limit_under_concurrency,
    a_refresh_token_rotates_exactly_once_under_concurrency,
    users_are_unique_per_tenant_and_address,
    concurrent_outbox_claims_never_overlap_and_leases_expire,
    signing_key_generations_are_unique,
    ending_a_session_is_idempotent,
    rate_counters_count_every_concurrent_hit_once,
    an_idempotency_key_is_claimed_once_under_concurrency,
    old_counters_and_expired_keys_are_purged,
    a_passkey_ceremony_is_claimed_once_under_concurrency_and_only_by_its_tenant,
    credential_ids_are_unique_per_tenant_and_logins_update_their_passkey,
    users_list_in_creation_then_id_order_with_cursors_and_filters,
    disabling_ends_every_login_of_the_user_and_suppresses_new_ones,
);

async fn store(backend: Backend) -> (Store, TestDb) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    store
        .migrate(latchkey::auth::email::canonical)
        .await
        .unwrap();
    (store, db)
}

async fn insert_session(store: &Store, id: &str, tenant: &str) {
    insert_session_for(store, id, tenant, "s@example.com").await;
}

/// Inserts a pending session of `email`; returns the email it gets.
async fn insert_session_for(store: &Store, id: &str, tenant: &str, email: &str) -> MailKind {
    let mut tx = store.begin().await.unwrap();
    let kind = tx
        .insert_session(&NewSession {
            id,
            tenant_id: tenant,
            email,
            method: Method::Code,
            code_hash: Some(&[7; 32]),
            link_hash: None,
            proof_expires_at: 10_000,
            client_ip: None,
            user_agent: None,
            created_at: 1_000,
            validation_url: None,
            locale: "en",
            mail_kind: MailKind::SignIn,
            email_change_of: None,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    kind
}

async fn migrations_apply_twice_and_make_the_store_ready(backend: Backend) {
    let (store, _db) = store(backend).await;
    assert_eq!(store.backend(), backend);
    assert!(store.is_ready().await);
    store
        .migrate(latchkey::auth::email::canonical)
        .await
        .expect("migrating again is a no-op");
    assert!(store.is_ready().await);
}

async fn code_attempts_stop_exactly_at_the_limit_under_concurrency(backend: Backend) {
    let (store, _db) = store(backend).await;
    insert_session(&store, "s1", "default").await;

    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let got = tx
                    .take_code_attempt("default", "s1", 2_000, 5)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                got.map(|a| a.attempts)
            })
        })
        .collect();
    let mut counted = Vec::new();
    for t in tasks {
        if let Some(n) = t.await.unwrap() {
            counted.push(n);
        }
    }
    counted.sort();
    assert_eq!(counted, vec![1, 2, 3, 4, 5]);

    // Expired proofs and other tenants' sessions cannot be attempted at all.
    insert_session(&store, "s2", "default").await;
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.take_code_attempt("default", "s2", 10_000, 5)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tx.take_code_attempt("other", "s2", 2_000, 5)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_refresh_token_rotates_exactly_once_under_concurrency(backend: Backend) {
    let (store, _db) = store(backend).await;
    insert_session(&store, "s1", "default").await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_refresh_token("default", "s1", &[1; 32], 1_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let won = tx
                    .rotate_refresh_token("default", &[1; 32], &[i; 8], 2_000)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                won
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let row = store
        .find_refresh_token("default", &[1; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.rotated_at, Some(2_000));
    assert!(
        store
            .find_refresh_token("other", &[1; 32])
            .await
            .unwrap()
            .is_none()
    );
}

async fn users_are_unique_per_tenant_and_address(backend: Backend) {
    let (store, db) = store(backend).await;
    // A second tenant (the tenants issue adds an API for this).
    let pool = match backend {
        Backend::Sqlite => {
            crate::helpers::TestPool::Sqlite(sqlx::SqlitePool::connect(&db.url).await.unwrap())
        }
        Backend::Postgres => {
            crate::helpers::TestPool::Postgres(sqlx::PgPool::connect(&db.url).await.unwrap())
        }
    };
    pool.exec("INSERT INTO tenants (id, name, created_at) VALUES ('other', 'Other', 0)")
        .await;
    pool.close().await;

    let mut tx = store.begin().await.unwrap();
    let (a, created_a) = tx
        .find_or_create_user("default", "u@example.com", "id-a", 1)
        .await
        .unwrap();
    let (b, created_b) = tx
        .find_or_create_user("default", "u@example.com", "id-b", 2)
        .await
        .unwrap();
    let (c, created_c) = tx
        .find_or_create_user("other", "u@example.com", "id-c", 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert!(created_a && !created_b && created_c);
    assert_eq!(a, b);
    assert_eq!((a.id.as_str(), a.created_at), ("id-a", 1));
    assert_eq!(c.id, "id-c");
}

async fn concurrent_outbox_claims_never_overlap_and_leases_expire(backend: Backend) {
    let (store, db) = store(backend).await;
    let mut tx = store.begin().await.unwrap();
    for i in 0..30 {
        let id = format!("m{i:02}");
        tx.enqueue_mail(&NewMail {
            id: &id,
            tenant_id: "default",
            session_id: None,
            kind: MailKind::SignIn,
            recipient: "r@example.com",
            payload_sealed: Some(b"sealed"),
            created_at: 1_000,
            deliver: true,
            notify: true,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_mail(1_000, 60_000, 4).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 30, "every message claimed once");
    assert_eq!(distinct.len(), 30);

    // Leased messages are not due again until the lease ends...
    assert!(
        store
            .claim_mail(59_999, 120_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // ...outcomes are recorded (failures only by the current claim: attempts 1)...
    store.mark_mail_sent("m00", 2_000, None).await.unwrap();
    store
        .mark_mail_dead("m01", 1, "550 no such user")
        .await
        .unwrap();
    store
        .reschedule_mail("m02", 1, 500_000, "timeout")
        .await
        .unwrap();
    // ...then a crashed worker's claims come back, counting the attempt.
    let again = store.claim_mail(60_000, 120_000, 100).await.unwrap();
    assert_eq!(again.len(), 27);
    assert!(again.iter().all(|m| m.attempts == 2));
    assert!(again.iter().all(|m| m.payload_sealed.is_some()));
    // A stale claim (attempt 1) can no longer reschedule or kill them.
    store.reschedule_mail("m03", 1, 0, "stale").await.unwrap();
    store.mark_mail_dead("m04", 1, "stale").await.unwrap();
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.queued, counts.sent, counts.dead), (28, 1, 1));
    assert!(
        store
            .claim_mail(60_001, 120_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Claims given back at shutdown are due at once, the attempt uncounted;
    // a stale claim's release changes nothing.
    let mut stale = again[2].clone();
    stale.attempts = 1;
    store.release_mail(&[stale], 60_002).await.unwrap();
    store.release_mail(&again[..2], 60_002).await.unwrap();
    let released = store.claim_mail(60_002, 180_000, 100).await.unwrap();
    let ids: HashSet<_> = released.iter().map(|m| m.id.as_str()).collect();
    let expected: HashSet<_> = again[..2].iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, expected);
    assert!(released.iter().all(|m| m.attempts == 2), "{released:?}");

    // A sent message no longer holds its sealed payload; a dead one keeps it
    // so it can be queued again.
    let pool = crate::helpers::TestPool::connect(&db).await;
    let kept = pool
        .strings("SELECT id FROM outbox WHERE payload_sealed IS NOT NULL ORDER BY id")
        .await;
    pool.close().await;
    assert!(!kept.contains(&"m00".to_owned()) && kept.contains(&"m01".to_owned()));
    assert_eq!(kept.len(), 29);
    assert_eq!(store.outbox_list("dead", 10).await.unwrap()[0].id, "m01");
    assert_eq!(store.requeue_dead(Some("m01"), 60_001).await.unwrap(), 1);
    assert_eq!(store.requeue_dead(None, 60_001).await.unwrap(), 0);
    let requeued = store.claim_mail(60_001, 120_000, 100).await.unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!((requeued[0].id.as_str(), requeued[0].attempts), ("m01", 1));
}

async fn signing_key_generations_are_unique(backend: Backend) {
    let (store, _db) = store(backend).await;
    let key = |kid: &'static str, generation| NewSigningKey {
        tenant_id: "default",
        generation,
        kid,
        alg: "EdDSA",
        private_key_sealed: b"sealed",
        created_at: 1,
        activates_at: 1,
    };
    assert!(store.insert_signing_key(&key("k1", 1), 100).await.unwrap());
    assert!(
        !store
            .insert_signing_key(&key("k1-rival", 1), 100)
            .await
            .unwrap()
    );
    assert!(store.insert_signing_key(&key("k2", 2), 500).await.unwrap());

    let published = store.published_signing_keys("default", 499).await.unwrap();
    assert_eq!(
        published.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );
    assert_eq!(published[0].published_until, Some(500));
    let later = store.published_signing_keys("default", 500).await.unwrap();
    assert_eq!(
        later.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    assert_eq!(store.all_signing_keys("default").await.unwrap().len(), 2);
}

async fn ending_a_session_is_idempotent(backend: Backend) {
    let (store, _db) = store(backend).await;
    insert_session(&store, "s1", "default").await;
    let mut tx = store.begin().await.unwrap();
    assert!(
        !tx.end_session("other", "s1", SessionEnd::Revoked, 5)
            .await
            .unwrap()
    );
    assert!(
        tx.end_session("default", "s1", SessionEnd::Revoked, 5)
            .await
            .unwrap()
    );
    assert!(
        !tx.end_session("default", "s1", SessionEnd::Revoked, 6)
            .await
            .unwrap()
    );
    let status = tx.session_status("default", "s1").await.unwrap().unwrap();
    assert_eq!(status.state, SessionStage::Ended);
    assert_eq!(status.end_reason, Some(SessionEnd::Revoked));
    tx.commit().await.unwrap();
}

async fn rate_counters_count_every_concurrent_hit_once(backend: Backend) {
    let (store, _db) = store(backend).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                // Every call hits "a"; each also hits one of three others.
                let shard = format!("t:{}", i % 3);
                let hits = [
                    Hit {
                        key: "a",
                        window_start: 60_000,
                    },
                    Hit {
                        key: &shard,
                        window_start: 60_000,
                    },
                ];
                let counts = tx.hit("default", &hits, 61_000 + i).await.unwrap();
                tx.commit().await.unwrap();
                counts.into_iter().find(|(k, _)| k == "a").unwrap().1
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=10).collect::<Vec<_>>(),
        "each hit sees its own count"
    );

    let mut tx = store.begin().await.unwrap();
    let mut others = 0;
    for shard in ["t:0", "t:1", "t:2"] {
        others += tx
            .lock_counter("default", shard, 60_000)
            .await
            .unwrap()
            .unwrap()
            .0;
    }
    assert_eq!(others, 10);
    assert!(
        tx.lock_counter("other", "a", 60_000)
            .await
            .unwrap()
            .is_none(),
        "another tenant"
    );
    let (count, last_at) = tx
        .lock_counter("default", "a", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 10);
    assert!((61_000..61_010).contains(&last_at));
    assert!(tx.lock_counter("default", "a", 0).await.unwrap().is_none());
    // A rolled-back hit counts nothing.
    tx.hit(
        "default",
        &[Hit {
            key: "a",
            window_start: 60_000,
        }],
        62_000,
    )
    .await
    .unwrap();
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.lock_counter("default", "a", 60_000)
            .await
            .unwrap()
            .unwrap()
            .0,
        10
    );
    drop(tx);

    // Adding outside a call: concurrent adds all land, each sees a total.
    let adds: Vec<_> = (1..=4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_to_counter("default", "tenant", 60_000, n, 61_000)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut totals = Vec::new();
    for add in adds {
        totals.push(add.await.unwrap());
    }
    assert_eq!(totals.iter().max(), Some(&10), "{totals:?}");
    assert_eq!(
        store
            .add_to_counter("default", "tenant", 60_000, 0, 61_000)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        store
            .add_to_counter("default", "tenant", 120_000, 0, 121_000)
            .await
            .unwrap(),
        0
    );
}

/// An idempotency key claimed at `now` for a session whose proof expires
/// ten minutes later.
fn key<'a>(
    key: &'a str,
    request_hash: &'a [u8],
    session_id: &'a str,
    now: i64,
    expires_at: i64,
) -> NewIdempotencyKey<'a> {
    NewIdempotencyKey {
        key,
        request_hash,
        session_id,
        answer_expires_at: now + 600_000,
        now,
        expires_at,
    }
}

async fn an_idempotency_key_is_claimed_once_under_concurrency(backend: Backend) {
    let (store, _db) = store(backend).await;
    for i in 0..6 {
        insert_session(&store, &format!("s{i}"), "default").await;
    }
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let session_id = format!("s{i}");
                let won = tx
                    .claim_idempotency_key(
                        "default",
                        &key("k1", &[i as u8], &session_id, 1_000, 5_000),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                won.then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .existing_idempotency_key("default", "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.session_id, format!("s{}", winners[0]));
    assert_eq!(first.request_hash, vec![winners[0] as u8]);
    assert_eq!(first.answer_expires_at, 1_000 + 600_000);
    assert!(
        tx.existing_idempotency_key("other", "k1")
            .await
            .unwrap()
            .is_none()
    );
    // Once expired, the key can be taken again.
    assert!(
        tx.claim_idempotency_key("default", &key("k1", &[9], "s5", 5_000, 9_000))
            .await
            .unwrap()
    );
}

async fn old_counters_and_expired_keys_are_purged(backend: Backend) {
    let (store, _db) = store(backend).await;
    insert_session(&store, "s1", "default").await;
    let mut tx = store.begin().await.unwrap();
    for window_start in [0, 60_000, 120_000] {
        tx.hit(
            "default",
            &[Hit {
                key: "a",
                window_start,
            }],
            window_start,
        )
        .await
        .unwrap();
    }
    tx.claim_idempotency_key("default", &key("old", &[1], "s1", 0, 100_000))
        .await
        .unwrap();
    tx.claim_idempotency_key("default", &key("new", &[1], "s1", 0, 200_000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Windows starting before 60 000 and keys expired by 150 000 go.
    assert_eq!(store.purge_limits(60_000, 150_000).await.unwrap(), 2);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.lock_counter("default", "a", 0).await.unwrap().is_none());
    assert!(
        tx.lock_counter("default", "a", 60_000)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        tx.existing_idempotency_key("default", "old")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tx.existing_idempotency_key("default", "new")
            .await
            .unwrap()
            .is_some()
    );
}

/// The outbox worker's statements keep their plans whatever ANALYZE saw: an
/// outcome write is a primary-key lookup, a claim reads `outbox_due` in due
/// order and updates by primary key, and nothing scans the table. Checked
/// with the statistics of an empty queue and a backlog that came later
/// (what autovacuum leaves before a burst), then with statistics that saw
/// the backlog, for custom and generic plans of the prepared statements.
#[tokio::test]
async fn outbox_statement_plans_survive_analyze_with_a_backlog() {
    use sqlx::{Connection, Row};

    let (store, db) = store(Backend::Postgres).await;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let exec = |sql: &'static str| sqlx::raw_sql(sql);
    // Delivered history, analyzed while the queue was empty...
    exec(
        "INSERT INTO outbox (id, tenant_id, kind, recipient, state, attempts, next_attempt_at, created_at, sent_at) \
         SELECT 's' || g, 'default', 'sign_in', 'a@example.com', 'sent', 1, g, g, g \
         FROM generate_series(1, 50000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    exec("VACUUM ANALYZE outbox")
        .execute(&mut conn)
        .await
        .unwrap();
    // ...then a backlog of 50,000 queued messages.
    exec(
        "INSERT INTO outbox (id, tenant_id, kind, recipient, state, attempts, next_attempt_at, created_at) \
         SELECT 'q' || g, 'default', 'sign_in', 'a@example.com', 'queued', 1, g, g \
         FROM generate_series(1, 50000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let statements = latchkey::store::PLAN_CHECKED_STATEMENTS;
    for (name, sql, types, _) in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE {name}({types}) AS {sql}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let mut wrong = Vec::new();
    for stats in ["an empty queue", "the backlog"] {
        if stats == "the backlog" {
            exec("VACUUM ANALYZE outbox")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        for mode in ["force_custom_plan", "force_generic_plan"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
                .execute(&mut conn)
                .await
                .unwrap();
            for (name, _, _, args) in statements {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"
                )))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let plan: serde_json::Value =
                    serde_json::from_str(&row.try_get_unchecked::<String, _>(0).unwrap()).unwrap();
                let mut scans = Vec::new();
                collect_scans(&plan[0]["Plan"], &mut scans);
                // The update (or the claim's outer update) goes by primary key.
                let by_key = scans.iter().any(|s| s == "Index Scan outbox_pkey cond=(id");
                let expected = match *name {
                    "claim" => {
                        by_key
                            && scans.len() == 2
                            && scans
                                .iter()
                                .any(|s| s == "Index Scan outbox_due cond=(next_attempt_at")
                    }
                    _ => by_key && scans.len() == 1,
                };
                if !expected {
                    wrong.push(format!(
                        "{name} with the statistics of {stats} ({mode}): {scans:?}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "plans that depend on the statistics:\n{}",
        wrong.join("\n")
    );
    conn.close().await.unwrap();
}

/// Every scan of a plan as "<node type> <index> cond=<the index condition's
/// first word>" (just the node type for scans without an index).
fn collect_scans(node: &serde_json::Value, out: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    if kind.ends_with("Scan") && kind != "Subquery Scan" {
        match node["Index Name"].as_str() {
            Some(index) => {
                let cond = node["Index Cond"].as_str().unwrap_or_default();
                let column = cond.split_whitespace().next().unwrap_or_default();
                out.push(format!("{kind} {index} cond={column}"));
            }
            None => out.push(kind.to_owned()),
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect_scans(child, out);
    }
}

fn ceremony<'a>(id: &'a str, tenant_id: &'a str, expires_at: i64) -> NewCeremony<'a> {
    NewCeremony {
        id,
        tenant_id,
        kind: CeremonyKind::Login,
        user_id: None,
        state: "{}",
        created_at: 0,
        expires_at,
    }
}

async fn a_passkey_ceremony_is_claimed_once_under_concurrency_and_only_by_its_tenant(
    backend: Backend,
) {
    let (store, _db) = store(backend).await;
    store.insert_tenant("shop", "Shop", "{}", 0).await.unwrap();
    store
        .insert_ceremony(&ceremony("c1", "default", 10_000))
        .await
        .unwrap();
    // Another tenant does not see it (and takes nothing).
    let mut tx = store.begin().await.unwrap();
    assert!(tx.take_ceremony("shop", "c1").await.unwrap().is_none());
    tx.commit().await.unwrap();

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let taken = tx.take_ceremony("default", "c1").await.unwrap();
                tx.commit().await.unwrap();
                taken
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        if let Some(c) = task.await.unwrap() {
            claimed.push(c);
        }
    }
    assert_eq!(claimed.len(), 1, "exactly one Finish gets the ceremony");
    assert_eq!(claimed[0].kind, CeremonyKind::Login);
    assert_eq!(
        (claimed[0].state.as_str(), claimed[0].expires_at),
        ("{}", 10_000)
    );

    // A claim rolled back leaves the ceremony for the next one.
    store
        .insert_ceremony(&ceremony("c2", "default", 10_000))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.take_ceremony("default", "c2").await.unwrap().is_some());
    drop(tx);
    // Expired ones are purged, the others stay.
    store
        .insert_ceremony(&ceremony("c3", "default", 20_000))
        .await
        .unwrap();
    assert_eq!(store.purge_ceremonies(10_000).await.unwrap(), 1);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.take_ceremony("default", "c2").await.unwrap().is_none());
    assert!(tx.take_ceremony("default", "c3").await.unwrap().is_some());
}

async fn credential_ids_are_unique_per_tenant_and_logins_update_their_passkey(backend: Backend) {
    let (store, _db) = store(backend).await;
    store.insert_tenant("shop", "Shop", "{}", 0).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    // (Users u1 of the default tenant and u2 of the shop.)
    tx.find_or_create_user("default", "ada@example.com", "u1", 0)
        .await
        .unwrap();
    tx.find_or_create_user("shop", "ada@example.com", "u2", 0)
        .await
        .unwrap();
    let passkey = |id: &'static str, tenant_id: &'static str, user_id: &'static str| NewPasskey {
        id,
        tenant_id,
        user_id,
        credential_id: &[9; 16],
        credential: "{}",
        name: "Passkey",
        sign_count: 0,
        backup_eligible: true,
        backup_state: false,
        created_at: 5,
    };
    assert!(
        tx.insert_passkey(&passkey("p1", "default", "u1"))
            .await
            .unwrap()
    );
    assert!(
        !tx.insert_passkey(&passkey("p2", "default", "u1"))
            .await
            .unwrap(),
        "the same credential id twice in a tenant"
    );
    assert!(
        tx.insert_passkey(&passkey("p3", "shop", "u2"))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let found = tx.lock_passkey("default", &[9; 16]).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.user_id.as_str()), ("p1", "u1"));
    tx.record_passkey_use(
        "default",
        "p1",
        &PasskeyUse {
            credential: "{\"updated\":true}",
            sign_count: 7,
            backup_eligible: true,
            backup_state: true,
            used_at: 50,
        },
    )
    .await
    .unwrap();
    tx.mark_counter_regressed("default", "p1", 60)
        .await
        .unwrap();
    tx.mark_counter_regressed("default", "p1", 70)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let listed = store.user_passkeys("default", "u1").await.unwrap();
    assert_eq!(listed.len(), 1);
    let p = &listed[0];
    assert_eq!(
        (
            p.sign_count,
            p.backup_state,
            p.last_used_at,
            p.counter_regressed_at
        ),
        (7, true, Some(50), Some(60)),
        "the first regression is kept"
    );
    assert_eq!(p.credential, "{\"updated\":true}");
    // The other tenant's passkey is untouched; deleting is per user.
    let shop = store.user_passkeys("shop", "u2").await.unwrap();
    assert_eq!((shop[0].sign_count, shop[0].last_used_at), (0, None));
    assert!(!store.delete_passkey("default", "u2", "p1").await.unwrap());
    assert!(store.delete_passkey("default", "u1", "p1").await.unwrap());
    assert!(
        store
            .user_passkeys("default", "u1")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn users_list_in_creation_then_id_order_with_cursors_and_filters(backend: Backend) {
    let (store, _db) = store(backend).await;
    let mut tx = store.begin().await.unwrap();
    // Three in one millisecond, made out of id order, and one before them.
    for (id, email, at) in [
        ("id-c", "carl@example.com", 20),
        ("id-a", "anna@example.com", 20),
        ("id-b", "abel@example.com", 20),
        ("id-z", "zoe@example.com", 10),
    ] {
        tx.find_or_create_user("default", email, id, at)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let ids = |rows: Vec<latchkey::store::UserRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    let all = UserQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_users("default", &all).await.unwrap()),
        ["id-z", "id-a", "id-b", "id-c"]
    );
    assert!(store.list_users("other", &all).await.unwrap().is_empty());
    // After a cursor inside the tie: the rest of the tie, then nothing more.
    let after = UserQuery {
        after: Some((20, "id-a")),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_users("default", &after).await.unwrap()),
        ["id-b", "id-c"]
    );
    let first_two = UserQuery {
        limit: 2,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_users("default", &first_two).await.unwrap()),
        ["id-z", "id-a"]
    );
    let prefixed = UserQuery {
        email_prefix: Some("a"),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_users("default", &prefixed).await.unwrap()),
        ["id-a", "id-b"]
    );
    // (A prefix is text, not a pattern.)
    let pattern = UserQuery {
        email_prefix: Some("%"),
        limit: 10,
        ..Default::default()
    };
    assert!(
        store
            .list_users("default", &pattern)
            .await
            .unwrap()
            .is_empty()
    );
    let window = UserQuery {
        created_from: Some(10),
        created_before: Some(20),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_users("default", &window).await.unwrap()),
        ["id-z"]
    );
}

async fn session_for(store: &Store, id: &str, email: &str) -> MailKind {
    insert_session_for(store, id, "default", email).await
}

async fn disabling_ends_every_login_of_the_user_and_suppresses_new_ones(backend: Backend) {
    let (store, _db) = store(backend).await;
    let ada = "ada@example.com";
    // Ada: an active session and a pending login; Bob: an active session.
    for (session, email) in [
        ("s-active", ada),
        ("s-pending", ada),
        ("s-bob", "bob@example.com"),
    ] {
        assert_eq!(session_for(&store, session, email).await, MailKind::SignIn);
    }
    let mut tx = store.begin().await.unwrap();
    let (user, _) = tx
        .find_or_create_user("default", ada, "u-ada", 1)
        .await
        .unwrap();
    let (bob, _) = tx
        .find_or_create_user("default", "bob@example.com", "u-bob", 1)
        .await
        .unwrap();
    tx.activate_session("default", "s-active", &user.id, 2_000, 99_000)
        .await
        .unwrap();
    tx.activate_session("default", "s-bob", &bob.id, 2_000, 99_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Rolled back, nothing happened; committed, all of it did.
    for commit in [false, true] {
        let mut tx = store.begin().await.unwrap();
        let row = tx
            .set_user_disabled("default", &user.id, true, 3_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.disabled_at, Some(3_000));
        let ended = tx
            .end_every_login_of_user("default", &row, SessionEnd::UserDisabled, 3_000)
            .await
            .unwrap();
        assert_eq!(ended, 2);
        if commit {
            tx.commit().await.unwrap();
        } else {
            drop(tx);
            let back = store
                .user_by_id("default", &user.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back.disabled_at, None);
        }
    }
    let mut tx = store.begin().await.unwrap();
    for (session, stage) in [
        ("s-active", SessionStage::Ended),
        ("s-pending", SessionStage::Ended),
        ("s-bob", SessionStage::Active),
    ] {
        let status = tx
            .session_status("default", session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, stage, "{session}");
    }
    let status = tx
        .session_status("default", "s-pending")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.end_reason, Some(SessionEnd::UserDisabled));
    // Disabling again keeps the first time; nothing is left to end.
    let again = tx
        .set_user_disabled("default", &user.id, true, 4_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.disabled_at, again.updated_at), (Some(3_000), 4_000));
    tx.commit().await.unwrap();

    // A new login of the address is recorded, its email suppressed; Bob's
    // is not.
    assert_eq!(
        session_for(&store, "s-new", ada).await,
        MailKind::Suppressed
    );
    assert_eq!(
        session_for(&store, "s-bob-2", "bob@example.com").await,
        MailKind::SignIn
    );
    let mut tx = store.begin().await.unwrap();
    let enabled = tx
        .set_user_disabled("default", &user.id, false, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enabled.disabled_at, None);
    assert!(
        tx.set_user_disabled("default", "nobody", true, 5_000)
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
    assert_eq!(session_for(&store, "s-after", ada).await, MailKind::SignIn);
}
