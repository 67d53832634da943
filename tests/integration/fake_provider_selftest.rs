//! Tests of the fake OAuth2 provider itself, through real HTTP with reqwest: the later tests
//! (OAuth engine, concurrency, crash recovery, server, browser consent, benchmark) trust it.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use serde_json::{Value, json};

use crate::support::fake_provider::{
    Dialect, FakeConfig, FakeProvider, Fault, IssueKind, Pkce, RateLimit, RetryAfter, pkce_s256,
};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-selftest-verifier";
const REDIRECT: &str = "http://127.0.0.1:8123/oauth/callback";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

fn fixture(path: &str) -> Value {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .expect("ASCII header")
}

/// The query pairs of a `Location` header.
fn location_pairs(headers: &HeaderMap) -> (String, Vec<(String, String)>) {
    let location = url::Url::parse(header(headers, LOCATION.as_str())).expect("Location URL");
    let base = format!(
        "{}://{}{}",
        location.scheme(),
        location.host_str().unwrap_or_default(),
        location
            .port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default()
    ) + location.path();
    (base, location.query_pairs().into_owned().collect())
}

fn pair<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Runs the consent step (auto consent) and returns the authorization code.
async fn authorize(
    fake: &FakeProvider,
    client: &reqwest::Client,
    extra: &[(&str, &str)],
) -> String {
    let scope = match fake.dialect() {
        Dialect::Fitbit => "weight heartrate",
        Dialect::Google => {
            "https://www.googleapis.com/auth/googlehealth.health_metrics_and_measurements.readonly"
        }
        Dialect::Withings => "user.metrics,user.activity",
    };
    let config = fake.config();
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", config.client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-42"),
    ];
    query.extend_from_slice(extra);
    let response = client
        .get(fake.authorize_url())
        .query(&query)
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let (base, pairs) = location_pairs(response.headers());
    assert_eq!(base, REDIRECT);
    assert_eq!(pair(&pairs, "state"), Some("st-42"));
    assert_eq!(pair(&pairs, "error"), None, "{pairs:?}");
    pair(&pairs, "code").expect("code").to_owned()
}

fn pkce_params() -> [(&'static str, String); 2] {
    [
        ("code_challenge", pkce_s256(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ]
}

/// A token-endpoint call with the dialect's client authentication.
async fn token_call(
    fake: &FakeProvider,
    client: &reqwest::Client,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let config = fake.config();
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let request = client.post(fake.token_url());
    let request = match fake.dialect() {
        Dialect::Fitbit => request.basic_auth(&config.client_id, Some(&config.client_secret)),
        Dialect::Google | Dialect::Withings => {
            form.push(("client_id", &config.client_id));
            form.push(("client_secret", &config.client_secret));
            if fake.dialect() == Dialect::Withings {
                form.push(("action", "requesttoken"));
            }
            request
        }
    };
    request.form(&form).send().await.expect("token call")
}

async fn refresh(fake: &FakeProvider, client: &reqwest::Client, token: &str) -> reqwest::Response {
    token_call(
        fake,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

fn fitbit_weight_url(fake: &FakeProvider, date: &str) -> String {
    format!(
        "{}/1/user/-/body/log/weight/date/{date}.json",
        fake.base_url()
    )
}

async fn fitbit_get(
    fake: &FakeProvider,
    client: &reqwest::Client,
    token: &str,
) -> reqwest::Response {
    client
        .get(fitbit_weight_url(fake, "2024-01-15"))
        .bearer_auth(token)
        .send()
        .await
        .expect("API call")
}

#[tokio::test]
async fn fitbit_consent_and_code_exchange_with_pkce() {
    let fake = FakeProvider::start(FakeConfig::fitbit()).await;
    let client = client();
    let [challenge, method] = pkce_params();
    let code = authorize(
        &fake,
        &client,
        &[(challenge.0, &challenge.1), (method.0, &method.1)],
    )
    .await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];

    // Body-only client authentication is refused: Fitbit wants HTTP Basic.
    let config = fake.config();
    let body_only = client
        .post(fake.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("token call");
    assert_eq!(body_only.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(body_only).await["errors"][0]["errorType"],
        "invalid_client"
    );

    let response = token_call(&fake, &client, &exchange).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type",
            "user_id"
        ]
    );
    assert_eq!(body["expires_in"], 28_800);
    assert_eq!(body["scope"], "weight heartrate");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user_id"], "26FWFL");
    let issued = fake.issued_tokens("26FWFL");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].kind, IssueKind::CodeExchange);
    assert_eq!(
        issued[0].access_token,
        body["access_token"].as_str().unwrap()
    );

    // Codes are single-use; Fitbit echoes the code in the message.
    let again = token_call(&fake, &client, &exchange).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(again).await,
        json!({"errors": [{"errorType": "invalid_grant",
                           "message": format!("Authorization code invalid: {code}")}],
               "success": false})
    );

    // A wrong verifier is refused.
    let code = authorize(
        &fake,
        &client,
        &[(challenge.0, &challenge.1), (method.0, &method.1)],
    )
    .await;
    let wrong = token_call(
        &fake,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &VERIFIER.replace('d', "e")),
        ],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);

    // The access token works on the API, and every request was recorded as received.
    let api = fitbit_get(&fake, &client, body["access_token"].as_str().unwrap()).await;
    assert_eq!(api.status(), StatusCode::OK);
    let weights = json_of(api).await;
    assert_eq!(weights["weight"][0]["date"], "2024-01-15");
    let token_requests = fake.requests_to("/oauth2/token");
    assert_eq!(token_requests.len(), 4);
    assert!(
        token_requests[1]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(
        token_requests[1].form_param("code_verifier"),
        Some(VERIFIER)
    );
    assert_eq!(token_requests[1].user.as_deref(), Some("26FWFL"));
}

#[tokio::test]
async fn google_consent_and_code_exchange_with_pkce() {
    let fake = FakeProvider::start(FakeConfig {
        pkce: Pkce::Required,
        ..FakeConfig::google()
    })
    .await;
    let client = client();

    // Without a challenge the consent step redirects back with an error.
    let config = fake.config();
    let refused = client
        .get(fake.authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", config.known_scopes[0].as_str()),
            ("state", "st-42"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(refused.status(), StatusCode::FOUND);
    let (_, pairs) = location_pairs(refused.headers());
    assert_eq!(pair(&pairs, "error"), Some("invalid_request"));
    assert_eq!(pair(&pairs, "state"), Some("st-42"));

    let [challenge, method] = pkce_params();
    let pkce = [(challenge.0, challenge.1.as_str()), (method.0, &method.1)];
    let offline = [
        pkce[0],
        pkce[1],
        ("access_type", "offline"),
        ("login_hint", "555"),
    ];
    let code = authorize(&fake, &client, &offline).await;
    assert!(code.starts_with("4/"), "Google codes carry a slash: {code}");
    let response = token_call(
        &fake,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].is_string());
    assert!(body.get("user_id").is_none());
    assert_eq!(fake.issued_tokens("555").len(), 1);

    // Without access_type=offline there is no refresh token; a changed redirect_uri fails.
    let code = authorize(&fake, &client, &pkce).await;
    let body = json_of(
        token_call(
            &fake,
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await,
    )
    .await;
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none());
    let code = authorize(&fake, &client, &pkce).await;
    let mismatch = token_call(
        &fake,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9999/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(mismatch).await["error"], "redirect_uri_mismatch");
}

#[tokio::test]
async fn withings_consent_and_code_exchange_in_envelope() {
    let fake = FakeProvider::start(FakeConfig::withings()).await;
    let client = client();
    let code = authorize(&fake, &client, &[]).await;

    // Without action=requesttoken: an error inside HTTP 200.
    let config = fake.config();
    let no_action = client
        .post(fake.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .expect("token call");
    assert_eq!(no_action.status(), StatusCode::OK);
    let body = json_of(no_action).await;
    assert_eq!(body["status"], 503);
    assert!(body["error"].is_string());

    let code = authorize(&fake, &client, &[]).await;
    let response = token_call(
        &fake,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    let body = json_of(response).await;
    assert_eq!(body["status"], 0);
    let tokens = &body["body"];
    assert_eq!(tokens["userid"], "363");
    assert_eq!(tokens["expires_in"], 10_800);
    assert_eq!(tokens["scope"], "user.metrics,user.activity");
    assert!(tokens["access_token"].is_string() && tokens["refresh_token"].is_string());
}

#[tokio::test]
async fn consent_page_posts_the_approval_back() {
    let fake = FakeProvider::start(FakeConfig {
        auto_consent: false,
        ..FakeConfig::fitbit()
    })
    .await;
    let client = client();
    let config = fake.config();
    let page = client
        .get(fake.authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "weight"),
            ("state", "st-7"),
        ])
        .send()
        .await
        .expect("consent page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(header(page.headers(), "content-type").starts_with("text/html"));
    let html = page.text().await.expect("HTML");
    assert!(html.contains(r#"action="/authorize/approve""#));
    assert!(html.contains(r#"id="allow""#));
    let id = html
        .split(r#"name="request" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("request id in the page");
    let approved = client
        .post(format!("{}/authorize/approve", fake.base_url()))
        .form(&[("request", id), ("user", "BROWSER1"), ("decision", "allow")])
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status(), StatusCode::FOUND);
    let (base, pairs) = location_pairs(approved.headers());
    assert_eq!(base, REDIRECT);
    assert_eq!(pair(&pairs, "state"), Some("st-7"));
    let code = pair(&pairs, "code").expect("code");
    let body = json_of(
        token_call(
            &fake,
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(body["user_id"], "BROWSER1");
}

#[tokio::test]
async fn fitbit_refresh_is_single_use_with_replay() {
    let fake = FakeProvider::start(FakeConfig::fitbit()).await;
    let client = client();
    let grant = fake.grant("26FWFL");
    let old = grant.refresh_token.as_str();

    let first = json_of(refresh(&fake, &client, old).await).await;
    let new_access = first["access_token"].as_str().expect("access token");
    assert_ne!(first["refresh_token"], old);
    // The answer was "lost": the identical request gets the identical pair.
    let replay = json_of(refresh(&fake, &client, old).await).await;
    assert_eq!(replay, first);

    // Once the new access token is used, the old refresh token is dead, and Fitbit echoes it.
    assert_eq!(
        fitbit_get(&fake, &client, new_access).await.status(),
        StatusCode::OK
    );
    let dead = refresh(&fake, &client, old).await;
    assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(dead).await,
        json!({"errors": [{"errorType": "invalid_grant",
                           "message": format!("Refresh token invalid: {old}")}],
               "success": false})
    );
    assert_eq!(fake.refresh_count("26FWFL"), 3);
    assert_eq!(fake.refresh_count_for(old), 3);
    let kinds: Vec<IssueKind> = fake
        .issued_tokens("26FWFL")
        .iter()
        .map(|issued| issued.kind)
        .collect();
    assert_eq!(kinds, [IssueKind::Grant, IssueKind::Refresh]);

    // Using the new refresh token also ends the replay window of its predecessor.
    let next = first["refresh_token"].as_str().unwrap();
    let second = json_of(refresh(&fake, &client, next).await).await;
    let third = second["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(&fake, &client, third).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        refresh(&fake, &client, next).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn google_refresh_keeps_the_refresh_token() {
    let fake = FakeProvider::start(FakeConfig::google()).await;
    let client = client();
    let grant = fake.grant("104857600123456789");
    let first = json_of(refresh(&fake, &client, &grant.refresh_token).await).await;
    let second = json_of(refresh(&fake, &client, &grant.refresh_token).await).await;
    for body in [&first, &second] {
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["access_token", "expires_in", "scope", "token_type"]);
    }
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(fake.refresh_count("104857600123456789"), 2);

    let unknown = refresh(&fake, &client, "1//0unknown").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(unknown).await["error"], "invalid_grant");

    // Client credentials travel in the form body.
    let request = &fake.requests_to("/token")[0];
    assert_eq!(
        request.form_param("client_secret"),
        Some(fake.config().client_secret.as_str())
    );
    assert!(request.header("authorization").is_none());
}

#[tokio::test]
async fn withings_rotates_and_answers_in_envelopes() {
    let fake = FakeProvider::start(FakeConfig::withings()).await;
    let client = client();
    let grant = fake.grant("363");
    let rotated = json_of(refresh(&fake, &client, &grant.refresh_token).await).await;
    assert_eq!(rotated["status"], 0);
    let access = rotated["body"]["access_token"].as_str().unwrap().to_owned();
    assert_ne!(
        rotated["body"]["refresh_token"],
        grant.refresh_token.as_str()
    );

    let measure = format!("{}/measure", fake.base_url());
    let getmeas = client
        .post(&measure)
        .bearer_auth(&access)
        .form(&[
            ("action", "getmeas"),
            ("meastypes", "1,6"),
            ("category", "1"),
        ])
        .send()
        .await
        .expect("getmeas");
    assert_eq!(getmeas.status(), StatusCode::OK);
    let body = json_of(getmeas).await;
    assert_eq!(body["status"], 0);
    let groups = body["body"]["measuregrps"].as_array().expect("groups");
    assert!(!groups.is_empty());
    let fixture = fixture("providers/withings-getmeas-weight.json");
    let mut expected: Vec<&String> = fixture["body"]["measuregrps"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut actual: Vec<&String> = groups[0].as_object().unwrap().keys().collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
    for measure in groups
        .iter()
        .flat_map(|g| g["measures"].as_array().unwrap())
    {
        assert!([1, 6].contains(&measure["type"].as_i64().unwrap()));
    }

    // The old refresh token died when the new access token was used.
    let old = json_of(refresh(&fake, &client, &grant.refresh_token).await).await;
    assert_eq!(old["status"], 503);
}

#[tokio::test]
async fn expired_access_tokens_get_each_dialects_401() {
    let client = client();

    let fitbit = FakeProvider::start(FakeConfig::fitbit()).await;
    let grant = fitbit.grant("26FWFL");
    fitbit.expire_access_token("26FWFL");
    let response = fitbit_get(&fitbit, &client, &grant.access_token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"errors": [{"errorType": "expired_token",
                           "message": format!("Access token expired: {}", grant.access_token)}],
               "success": false})
    );

    let google = FakeProvider::start(FakeConfig::google()).await;
    let grant = google.grant("104857600123456789");
    google.expire_access_token("104857600123456789");
    let response = client
        .get(format!(
            "{}/v4/users/me/dataTypes/weight/dataPoints",
            google.base_url()
        ))
        .bearer_auth(&grant.access_token)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        fixture("google-health/error-401.json")
    );

    let withings = FakeProvider::start(FakeConfig::withings()).await;
    let grant = withings.grant("363");
    withings.advance_clock(Duration::from_secs(10_801));
    let response = client
        .post(format!("{}/measure", withings.base_url()))
        .bearer_auth(&grant.access_token)
        .form(&[("action", "getmeas")])
        .send()
        .await
        .expect("getmeas");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["status"], 401);
}

#[tokio::test]
async fn google_lists_page_by_page_tokens() {
    let fake = FakeProvider::start(FakeConfig::google()).await;
    let client = client();
    let user = "104857600123456789";
    let grant = fake.grant(user);
    let points: Vec<Value> = (0..5)
        .map(|i| json!({"weight": {"sampleTime": {"physicalTime": format!("2026-11-2{}T06:00:00Z", 5 - i)}, "weightGrams": 80_000 + i}}))
        .collect();
    fake.seed_google(user, "weight", points.clone());
    let url = format!(
        "{}/v4/users/me/dataTypes/weight/dataPoints",
        fake.base_url()
    );
    let filter = r#"weight.sample_time.physical_time >= "2026-11-01T00:00:00Z""#;

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("pageSize", "2".to_owned()), ("filter", filter.to_owned())];
        if let Some(token) = &token {
            query.push(("pageToken", token.clone()));
        }
        let response = client
            .get(&url)
            .bearer_auth(&grant.access_token)
            .query(&query)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), StatusCode::OK);
        let body = json_of(response).await;
        pages += 1;
        seen.extend(body["dataPoints"].as_array().unwrap().iter().cloned());
        match body.get("nextPageToken") {
            Some(next) => token = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, points);
    let requests = fake.requests_to("/v4/");
    assert!(
        requests
            .iter()
            .all(|request| request.query_param("filter") == Some(filter))
    );

    // A filter narrows, a foreign page token or a kebab-case filter is refused.
    let narrow = r#"weight.sample_time.physical_time >= "2026-11-24T00:00:00Z""#;
    let body = json_of(
        client
            .get(&url)
            .bearer_auth(&grant.access_token)
            .query(&[("filter", narrow)])
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(body["dataPoints"].as_array().unwrap().len(), 2);
    assert!(body.get("nextPageToken").is_none());
    for query in [
        [("pageToken", "bogus"), ("pageSize", "2")],
        [
            (
                "filter",
                r#"body-fat.sample_time.physical_time >= "2026-11-01T00:00:00Z""#,
            ),
            ("pageSize", "2"),
        ],
    ] {
        let response = client
            .get(&url)
            .bearer_auth(&grant.access_token)
            .query(&query)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(response).await["error"]["status"],
            "INVALID_ARGUMENT"
        );
    }

    // Default data exists for the other types, shaped like the fixtures.
    for data_type in [
        "steps",
        "heart-rate",
        "sleep",
        "body-fat",
        "daily-resting-heart-rate",
    ] {
        let body = json_of(
            client
                .get(format!(
                    "{}/v4/users/me/dataTypes/{data_type}/dataPoints",
                    fake.base_url()
                ))
                .bearer_auth(&grant.access_token)
                .send()
                .await
                .expect("list"),
        )
        .await;
        let first = &body["dataPoints"][0];
        assert!(
            first["dataSource"]["platform"].is_string(),
            "{data_type}: {body}"
        );
    }
}

#[tokio::test]
async fn withings_getmeas_pages_with_more_and_offset() {
    let fake = FakeProvider::start(FakeConfig {
        withings_page_size: 4,
        ..FakeConfig::withings()
    })
    .await;
    let client = client();
    let grant = fake.grant("363");
    let now = Utc::now().timestamp();
    let start = (now - 10 * 86_400).to_string();
    let end = now.to_string();
    let mut offset = 0;
    let mut dates = Vec::new();
    let mut calls = 0;
    loop {
        let body = json_of(
            client
                .post(format!("{}/measure", fake.base_url()))
                .bearer_auth(&grant.access_token)
                .form(&[
                    ("action", "getmeas"),
                    ("meastype", "1"),
                    ("startdate", &start),
                    ("enddate", &end),
                    ("offset", &offset.to_string()),
                ])
                .send()
                .await
                .expect("getmeas"),
        )
        .await;
        calls += 1;
        let page = &body["body"];
        dates.extend(
            page["measuregrps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["date"].as_i64().unwrap()),
        );
        if page["more"] == 1 {
            offset = page["offset"].as_i64().unwrap();
        } else {
            assert_eq!(page["offset"], 0);
            break;
        }
    }
    // Two days out of three have a measurement: 6 or 7 groups in 10 days, 2 pages of 4.
    assert!((6..=7).contains(&dates.len()), "{dates:?}");
    assert_eq!(calls, 2);
    assert!(dates.windows(2).all(|pair| pair[0] > pair[1]));
}

#[tokio::test]
async fn fitbit_rate_limit_answers_429_after_the_budget() {
    let fake = FakeProvider::start(FakeConfig {
        rate_limit: Some(RateLimit {
            limit: 3,
            window: Duration::from_secs(3600),
        }),
        ..FakeConfig::fitbit()
    })
    .await;
    let client = client();
    let grant = fake.grant("26FWFL");
    for remaining in ["2", "1", "0"] {
        let response = fitbit_get(&fake, &client, &grant.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(header(headers, "fitbit-rate-limit-limit"), "3");
        assert_eq!(header(headers, "fitbit-rate-limit-remaining"), remaining);
        let reset: u64 = header(headers, "fitbit-rate-limit-reset").parse().unwrap();
        assert!((3590..=3600).contains(&reset), "{reset}");
    }
    let limited = fitbit_get(&fake, &client, &grant.access_token).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(limited.headers(), "retry-after").parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 3600);
    assert_eq!(
        header(limited.headers(), "fitbit-rate-limit-remaining"),
        "0"
    );
    assert_eq!(fake.api_call_count("26FWFL"), 4);

    fake.advance_clock(Duration::from_secs(3601));
    let response = fitbit_get(&fake, &client, &grant.access_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "fitbit-rate-limit-remaining"),
        "2"
    );
}

#[tokio::test]
async fn retired_mode_answers_410_everywhere() {
    let fake = FakeProvider::start(FakeConfig {
        retired: true,
        ..FakeConfig::fitbit()
    })
    .await;
    let client = client();
    let grant = fake.grant("26FWFL");
    let api = fitbit_get(&fake, &client, &grant.access_token).await;
    assert_eq!(api.status(), StatusCode::GONE);
    let authorize = client
        .get(fake.authorize_url())
        .send()
        .await
        .expect("authorize");
    assert_eq!(authorize.status(), StatusCode::GONE);
    let token = refresh(&fake, &client, &grant.refresh_token).await;
    assert_eq!(token.status(), StatusCode::GONE);
    fake.set_retired(false);
    let api = fitbit_get(&fake, &client, &grant.access_token).await;
    assert_eq!(api.status(), StatusCode::OK);
}

#[tokio::test]
async fn injected_faults_are_served_for_the_next_requests() {
    let fake = FakeProvider::start(FakeConfig::fitbit()).await;
    let client = client();
    let grant = fake.grant("26FWFL");
    let token = grant.access_token.as_str();

    // A status for the next request only.
    fake.inject_fault("/1/", Fault::Status(503), 1);
    assert_eq!(
        fitbit_get(&fake, &client, token).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        fitbit_get(&fake, &client, token).await.status(),
        StatusCode::OK
    );

    // 429 with Retry-After in seconds, then as an HTTP date.
    fake.inject_fault("/1/", Fault::TooManyRequests(RetryAfter::Seconds(7)), 1);
    let at = Utc::now() + chrono::Duration::seconds(30);
    fake.inject_fault("/1/", Fault::TooManyRequests(RetryAfter::HttpDate(at)), 1);
    let seconds = fitbit_get(&fake, &client, token).await;
    assert_eq!(seconds.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(seconds.headers(), "retry-after"), "7");
    let date = fitbit_get(&fake, &client, token).await;
    let value = header(date.headers(), "retry-after").to_owned();
    let parsed = chrono::DateTime::parse_from_rfc2822(&value).expect("HTTP date");
    assert_eq!(parsed.timestamp(), at.timestamp());
    assert!(value.ends_with(" GMT"));

    // Invalid JSON.
    fake.inject_fault("/1/", Fault::InvalidJson, 1);
    let broken = fitbit_get(&fake, &client, token).await;
    assert_eq!(broken.status(), StatusCode::OK);
    assert!(broken.json::<Value>().await.is_err());

    // Slow: a client with a short timeout gives up, the fake still records the request.
    fake.inject_fault("/1/", Fault::Delay(Duration::from_millis(400)), 1);
    let slow = client
        .get(fitbit_weight_url(&fake, "2024-01-15"))
        .bearer_auth(token)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(slow.expect_err("timeout").is_timeout());

    // Dropped: the connection closes without any answer, the next request is fine.
    fake.inject_fault("/1/", Fault::Drop, 1);
    let dropped = fitbit_get_result(&fake, &client, token).await;
    assert!(dropped.is_err(), "{dropped:?}");
    assert_eq!(
        fitbit_get(&fake, &client, token).await.status(),
        StatusCode::OK
    );
    let faults: Vec<Option<Fault>> = fake
        .requests_to("/1/")
        .into_iter()
        .map(|request| request.fault)
        .collect();
    assert_eq!(faults.iter().filter(|fault| fault.is_some()).count(), 6);

    // A refresh answered into the void: replaying the same request gets the issued pair.
    fake.inject_fault("/oauth2/token", Fault::DropAfterHandling, 1);
    let lost = client
        .post(fake.token_url())
        .basic_auth(&fake.config().client_id, Some(&fake.config().client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", grant.refresh_token.as_str()),
        ])
        .send()
        .await;
    assert!(lost.is_err(), "{lost:?}");
    let issued = fake.issued_tokens("26FWFL");
    assert_eq!(issued.len(), 2);
    let replay = json_of(refresh(&fake, &client, &grant.refresh_token).await).await;
    assert_eq!(replay["access_token"], issued[1].access_token.as_str());
    assert_eq!(fake.refresh_count_for(&grant.refresh_token), 2);
}

async fn fitbit_get_result(
    fake: &FakeProvider,
    client: &reqwest::Client,
    token: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .get(fitbit_weight_url(fake, "2024-01-15"))
        .bearer_auth(token)
        .send()
        .await
}

#[tokio::test]
async fn dropping_the_fake_stops_the_server() {
    let fake = FakeProvider::start(FakeConfig::fitbit()).await;
    let client = client();
    let grant = fake.grant("26FWFL");
    let url = fitbit_weight_url(&fake, "2024-01-15");
    assert_eq!(
        fitbit_get(&fake, &client, &grant.access_token)
            .await
            .status(),
        StatusCode::OK
    );
    drop(fake);
    tokio::task::yield_now().await;
    let after = client
        .get(&url)
        .bearer_auth(&grant.access_token)
        .send()
        .await;
    assert!(after.is_err(), "{after:?}");
}
