//! The setup page (`/plugin/<plugin>/page/setup.html`): everything a person needs to
//! register the app, add users and grant access, rendered on the server, with the
//! errors of each field beside it; for a user, the last sync of each method and a plot
//! of each numeric output's last 30 days from the archive. The shared chrome is in
//! `html`.
//!
//! Pages have no script and one inline style sheet, [`STYLE`], which the
//! Content-Security-Policy allows by its hash; forms post only to this server.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::error::AppError;
use super::html::{STYLE, urlencode};
use super::query::{RawQuery, get_param, pairs};
use super::state::AppState;
use super::status::{plugin_status, user_methods};
use crate::igor::paths;
use crate::live;
use crate::live::consent::html_escape as esc;
use crate::store::archive::{ArchivedEntry, Select};
use crate::user::UserName;

/// How many days of each output the setup page plots.
const PLOT_DAYS: i64 = 30;
/// The most points one plot draws; longer series are thinned evenly.
const PLOT_POINTS: usize = 500;

/// A refused form field, shown beside it.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// The field's name (`system`, a user setting's key).
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

/// Renders the setup page, for `?user=U` including that user's section.
pub async fn setup(
    State(state): State<Arc<AppState>>,
    Path(plugin): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let pairs = pairs(query.as_deref().unwrap_or(""));
    render(&state, &plugin, get_param(&pairs, "user"), None).await
}

/// The setup page for `plugin` (and the user named `typed`), with `error` shown beside
/// its field; answered with 400 when anything was refused.
pub async fn render(
    state: &AppState,
    plugin: &str,
    typed: Option<&str>,
    error: Option<&FieldError>,
) -> Result<Response, AppError> {
    let provider = state.provider(plugin)?;
    // A name that is not a user name is shown back with the reason beside the field.
    let (user, user_error) = match typed.map(UserName::parse) {
        None => (None, None),
        Some(Ok(u)) => (Some(u), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let typed = typed.unwrap_or("").to_owned();
    let store = state.rt.store.as_ref();
    let app = store.get(&paths::app(plugin)).await?.unwrap_or(Value::Null);
    let status = plugin_status(state, plugin).await.unwrap_or(Value::Null);
    let csrf = state.csrf.token(plugin);
    let p = esc(plugin);
    let self_url = match &user {
        Some(u) => format!("/plugin/{plugin}/page/setup.html?user={}", urlencode(u)),
        None => format!("/plugin/{plugin}/page/setup.html"),
    };
    let mut h = String::new();
    h.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{p}: healthpull setup</title><style>{STYLE}</style></head><body>"
    ));
    h.push_str(&format!(
        "<h1>{p} <small>({})</small></h1>",
        esc(provider.title.as_deref().unwrap_or(&provider.name))
    ));
    if let Some(r) = &provider.retired {
        h.push_str(&format!(
            "<p class=\"note\" id=\"retired\">The {} API was switched off on {}.{}</p>",
            esc(&provider.name),
            esc(&r.since),
            r.replacement
                .as_ref()
                .map(|x| format!(
                    " Point this plugin at the <code>{}</code> provider instead.",
                    esc(x)
                ))
                .unwrap_or_default()
        ));
    }

    // App registration.
    let client_id = live::leaf_text(app.get("client_id")).unwrap_or_default();
    let has_secret = live::leaf_text(app.get("client_secret")).is_some();
    let system = live::leaf_text(app.get("system")).unwrap_or_default();
    h.push_str("<h2>App registration</h2>");
    h.push_str(&format!(
        "<p>Register this server as an app with the provider. The callback (redirect) URL to register is:<br><code id=\"callback\">{}</code></p>",
        esc(&state.callback_url(plugin))
    ));
    h.push_str(&format!(
        "<form id=\"app-form\" method=\"post\" action=\"/plugin/{p}/settings\">\
<input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"returnTo\" value=\"{ret}\">\
<label>Client id <input name=\"client_id\" id=\"client_id\" value=\"{cid}\" size=\"40\"></label>\
<label>Client secret <input name=\"client_secret\" id=\"client_secret\" type=\"password\" autocomplete=\"off\" placeholder=\"{ph}\" size=\"40\"></label>\
<label>Unit system <select name=\"system\" id=\"system\">{opts}</select>{system_error}</label>\
<button type=\"submit\" id=\"save-app\">Save</button> <span id=\"secret-state\">{state_text}</span></form>",
        ret = esc(&self_url),
        cid = esc(&client_id),
        ph = if has_secret { "stored; leave empty to keep" } else { "not set" },
        opts = system_options(&system, &provider.api.default_system),
        system_error = field_error(error, "system"),
        state_text = if has_secret { "client secret is set" } else { "client secret is not set" },
    ));

    // Users.
    h.push_str("<h2>Users</h2>");
    let users = status.get("users").and_then(Value::as_object);
    match users {
        Some(m) if !m.is_empty() => {
            h.push_str(
                "<table id=\"users\"><tr><th>user</th><th>access</th><th>last fetch</th></tr>",
            );
            for (u, s) in m {
                h.push_str(&format!(
                    "<tr><td><a href=\"/plugin/{p}/page/setup.html?user={ue}\">{uh}</a></td><td>{}</td><td>{}</td></tr>",
                    grant_text(s),
                    esc(s.get("last_success").and_then(Value::as_str).unwrap_or("never")),
                    ue = urlencode(u),
                    uh = esc(u)
                ));
            }
            h.push_str("</table>");
        }
        _ => h.push_str("<p>No users yet.</p>"),
    }
    h.push_str(&format!(
        "<form id=\"user-pick\" method=\"get\" action=\"/plugin/{p}/page/setup.html\"><label>Show or add user <input name=\"user\" id=\"pick-user\" value=\"{}\"></label><button type=\"submit\" id=\"show-user\">Show</button>{}</form>",
        esc(&typed),
        user_error
            .as_ref()
            .map(|e| format!(" <span class=\"bad\" id=\"user-error\">{}</span>", esc(&e.to_string())))
            .unwrap_or_default()
    ));

    if let Some(u) = &user {
        h.push_str(
            &user_section(
                state,
                plugin,
                u,
                &csrf,
                &self_url,
                users.and_then(|m| m.get(u.as_str())),
                error,
            )
            .await,
        );
    }
    h.push_str("</body></html>");
    let status = if user_error.is_some() || error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, Html(h)).into_response())
}

/// The error about `field`, if `error` is about it, to stand beside the field.
fn field_error(error: Option<&FieldError>, field: &str) -> String {
    match error {
        Some(e) if e.field == field => format!(
            " <span class=\"bad field-error\" id=\"error-{f}\">{}</span>",
            esc(&e.message),
            f = esc(field)
        ),
        _ => String::new(),
    }
}

fn grant_text(s: &Value) -> String {
    let granted = s.get("granted").and_then(Value::as_bool).unwrap_or(false);
    let consent = s
        .get("consent_needed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if consent {
        "<span class=\"bad\">consent needed again</span>".into()
    } else if granted {
        "<span class=\"ok\">granted</span>".into()
    } else {
        "<span class=\"bad\">not granted</span>".into()
    }
}

async fn user_section(
    state: &AppState,
    plugin: &str,
    user: &UserName,
    csrf: &str,
    self_url: &str,
    status: Option<&Value>,
    error: Option<&FieldError>,
) -> String {
    let store = state.rt.store.as_ref();
    let data = store.get(&paths::user(plugin, user)).await.ok().flatten();
    let p = esc(plugin);
    let ue = urlencode(user);
    let mut h = format!("<h2 id=\"user-heading\">User {}</h2>", esc(user));
    if data.is_none() {
        h.push_str(&format!(
            "<p id=\"user-missing\">{} has no entry for this plugin yet.</p>\
<form id=\"create-user\" method=\"post\" action=\"/plugin/{p}/userSettings\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"returnTo\" value=\"{}\"><button type=\"submit\" id=\"create-user-button\">Create user</button></form>",
            esc(user),
            esc(user),
            esc(self_url)
        ));
        return h;
    }
    let data = data.unwrap_or(Value::Null);
    let token = data
        .get("token")
        .and_then(crate::auth::oauth::Token::from_stored);
    let consent_needed = status
        .and_then(|s| s.get("consent_needed"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    h.push_str("<table id=\"token-health\">");
    let access = match (&token, consent_needed) {
        (_, true) => {
            "<span class=\"bad\" id=\"grant-state\">consent needed again</span>".to_owned()
        }
        (Some(_), false) => "<span class=\"ok\" id=\"grant-state\">granted</span>".to_owned(),
        (None, false) => "<span class=\"bad\" id=\"grant-state\">not granted</span>".to_owned(),
    };
    h.push_str(&format!("<tr><th>access</th><td>{access}</td></tr>"));
    if let Some(t) = &token {
        let exp = t
            .expires_at
            .and_then(|e| chrono::DateTime::from_timestamp(e as i64, 0))
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| "does not expire".into());
        h.push_str(&format!(
            "<tr><th>token expires</th><td id=\"token-expiry\">{}</td></tr>",
            esc(&exp)
        ));
        if let Some(s) = &t.scope {
            h.push_str(&format!("<tr><th>scopes</th><td>{}</td></tr>", esc(s)));
        }
    }
    let field = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .map(esc)
            .unwrap_or_else(|| "—".into())
    };
    h.push_str(&format!(
        "<tr><th>last fetch</th><td id=\"last-success\">{}</td></tr>",
        field("last_success")
    ));
    h.push_str(&format!(
        "<tr><th>last error</th><td id=\"last-error\">{} {}</td></tr></table>",
        field("last_error"),
        field("last_error_at")
    ));
    h.push_str(&history_section(state, plugin, user, &data).await);
    let grant_label = if token.is_some() {
        "Grant access again"
    } else {
        "Grant access"
    };
    h.push_str(&format!(
        "<p><a id=\"grant-link\" href=\"/plugin/{p}/auth1?user={ue}\">{grant_label}</a></p>"
    ));
    if token.is_some() {
        h.push_str(&format!(
            "<form id=\"delete-token\" method=\"post\" action=\"/plugin/{p}/userSettings\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"deleteToken\" value=\"1\"><input type=\"hidden\" name=\"returnTo\" value=\"{}\">\
<button type=\"submit\" id=\"delete-token-button\">Delete token</button></form>",
            esc(user),
            esc(self_url)
        ));
    }
    // Settings.
    h.push_str(&format!(
        "<h3>Settings of {}</h3><form id=\"user-form\" method=\"post\" action=\"/plugin/{p}/userSettings\"><input type=\"hidden\" name=\"_csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"returnTo\" value=\"{}\"><table>",
        esc(user),
        esc(user),
        esc(self_url)
    ));
    if let Value::Object(m) = &data {
        for (k, v) in m {
            if k == "token" || k == "timezone" {
                continue;
            }
            let val = live::leaf_text(Some(v)).unwrap_or_default();
            h.push_str(&format!(
                "<tr><td><label for=\"set-{k}\">{k}</label></td><td><input id=\"set-{k}\" name=\"{k}\" value=\"{}\">{}</td></tr>",
                esc(&val),
                field_error(error, k),
                k = esc(k)
            ));
        }
    }
    // The time zone always has a row: it decides which day "today" is.
    let zone = live::leaf_text(data.get("timezone")).unwrap_or_default();
    let machine = crate::transform::local::machine_zone();
    h.push_str(&format!(
        "<tr><td><label for=\"set-timezone\">timezone</label></td><td><input id=\"set-timezone\" name=\"timezone\" value=\"{}\" placeholder=\"{m}\">{}\
<span class=\"hint\"> an IANA name such as Europe/Amsterdam; empty: this server's zone, {m}</span></td></tr>",
        esc(&zone),
        field_error(error, "timezone"),
        m = esc(machine.name())
    ));
    let existing = |k: &str| matches!(&data, Value::Object(m) if m.contains_key(k));
    let declared = crate::settings::declared_keys(&state.plugins[plugin]);
    // An error about a key without a row of its own is shown beside the new-setting row.
    let new_error = match error {
        Some(e) if !matches!(e.field.as_str(), "system" | "timezone") && !existing(&e.field) => {
            format!(
                " <span class=\"bad field-error\" id=\"error-new\">{}</span>",
                esc(&e.message)
            )
        }
        _ => String::new(),
    };
    h.push_str(&format!(
        "<tr><td><input name=\"_newName\" id=\"new-name\" placeholder=\"new setting, e.g. methods\"></td><td><input name=\"_newValue\" id=\"new-value\" placeholder=\"value, e.g. get_bodyweight,get_bodyfat\">{new_error}</td></tr></table>\
<p class=\"hint\">Settings this provider takes: {}.</p>\
<button type=\"submit\" id=\"save-user\">Save settings</button></form>",
        esc(&declared.join(", "))
    ));
    h
}

fn system_options(current: &str, provider_default: &str) -> String {
    let mut out = String::new();
    let default_label = format!(
        "provider default: {}",
        match crate::transform::units::UnitSystem::from_setting(provider_default) {
            crate::transform::units::UnitSystem::Us => "US (pounds, miles)",
            crate::transform::units::UnitSystem::Uk => "UK (stone, miles)",
            crate::transform::units::UnitSystem::Metric => "metric (kilograms, kilometres)",
        }
    );
    let choices = [
        ("", default_label.as_str()),
        ("en_US", "US (pounds, miles)"),
        ("en_GB", "UK (stone, miles)"),
        ("metric", "metric (kilograms, kilometres)"),
    ];
    let mut found = false;
    for (v, label) in choices {
        let sel = if v == current {
            found = true;
            " selected"
        } else {
            ""
        };
        out.push_str(&format!(
            "<option value=\"{v}\"{sel}>{}</option>",
            esc(label)
        ));
    }
    if !found {
        out.push_str(&format!(
            "<option value=\"{v}\" selected>{v}</option>",
            v = esc(current)
        ));
    }
    out
}

/// The user's history: the last run of each planned method, and a plot of each output
/// with numeric values among the archive's entries of the last [`PLOT_DAYS`] days.
async fn history_section(state: &AppState, plugin: &str, user: &UserName, data: &Value) -> String {
    let mut h = String::new();
    let stored_methods = live::leaf_text(data.get("methods"));
    if let Ok(Value::Object(methods)) =
        user_methods(state, plugin, user, stored_methods.as_deref()).await
    {
        h.push_str(&counts_table(&methods));
    }
    let zone = crate::settings::user_zone(live::leaf_text(data.get("timezone")).as_deref())
        .unwrap_or_else(|_| crate::transform::local::machine_zone());
    let today = crate::transform::local::today_in(state.rt.clock.now(), zone);
    let select = Select::Days(today - chrono::Duration::days(PLOT_DAYS - 1), today);
    let archive = state.rt.archive.as_ref();
    let outputs = archive
        .outputs(plugin, user.as_str())
        .await
        .unwrap_or_default();
    let mut plots = String::new();
    for output in outputs {
        let Ok(entries) = archive
            .entries(plugin, user.as_str(), &output, select)
            .await
        else {
            continue;
        };
        if let Some(svg) = plot(&output, &points(&entries)) {
            plots.push_str(&format!("<h4>{}</h4><p>{svg}</p>", esc(&output)));
        }
    }
    if !plots.is_empty() {
        h.push_str(&format!(
            "<h3>Last {PLOT_DAYS} days</h3><div id=\"plots\">{plots}</div>"
        ));
    }
    h
}

/// The last run of each method: when, how it ended, what it archived and the days the
/// archive covers.
fn counts_table(methods: &serde_json::Map<String, Value>) -> String {
    if methods.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h3>Last sync</h3><table id=\"sync-counts\"><tr><th>method</th><th>run</th><th>outcome</th>\
<th>added</th><th>changed</th><th>unchanged</th><th>covered</th></tr>",
    );
    for (method, m) in methods {
        let run = &m["last_run"];
        let count = |k: &str| {
            run[k]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "—".into())
        };
        let run_text = match (run["kind"].as_str(), run["at"].as_str()) {
            (Some(kind), Some(at)) => format!("{}, {}", esc(kind), esc(&run_time(at))),
            _ => "never".to_owned(),
        };
        let outcome = match run["outcome"].as_str() {
            Some("ok") => "<span class=\"ok\">ok</span>".to_owned(),
            Some(o) => format!("<span class=\"bad\">{}</span>", esc(o)),
            None => "—".to_owned(),
        };
        let covered = match (
            m["covered"]["first"].as_str(),
            m["covered"]["last"].as_str(),
        ) {
            (Some(first), Some(last)) => {
                let gaps = m["covered"]["gaps"].as_u64().unwrap_or(0);
                let gaps = match gaps {
                    0 => String::new(),
                    1 => ", 1 day missing".to_owned(),
                    n => format!(", {n} days missing"),
                };
                format!("{} to {}{gaps}", esc(first), esc(last))
            }
            _ => "—".to_owned(),
        };
        h.push_str(&format!(
            "<tr id=\"counts-{id}\"><td>{name}</td><td>{run_text}</td><td class=\"outcome\">{outcome}</td>\
<td class=\"added\">{}</td><td class=\"changed\">{}</td><td class=\"unchanged\">{}</td><td class=\"covered\">{covered}</td></tr>",
            count("added"),
            count("changed"),
            count("unchanged"),
            id = esc(method),
            name = esc(method),
        ));
    }
    h.push_str("</table>");
    h
}

/// When a run was, to the minute in UTC (the record's own text if it is not a time).
fn run_time(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| at.to_owned())
}

/// One point of a plot: its time (seconds on the entry's own clock), its day and value.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    at: f64,
    day: String,
    value: f64,
}

/// The entries with a time and a numeric `value`, in time order.
fn points(entries: &[ArchivedEntry]) -> Vec<Point> {
    let mut points: Vec<Point> = entries
        .iter()
        .filter_map(|e| {
            let at = e.at.as_deref()?;
            let value = e.value.get("value").and_then(live::leaf_number)?;
            let time = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(at.get(..10)?, "%Y-%m-%d")
                        .ok()?
                        .and_hms_opt(0, 0, 0)
                })?;
            value.is_finite().then(|| Point {
                at: time.and_utc().timestamp() as f64,
                day: time.date().format("%Y-%m-%d").to_string(),
                value,
            })
        })
        .collect();
    points.sort_by(|a, b| a.at.total_cmp(&b.at));
    points
}

/// A value as an axis label: at most two decimals, no trailing zeros.
fn axis_number(v: f64) -> String {
    let rounded = (v * 100.0).round() / 100.0;
    if rounded == 0.0 {
        "0".to_owned()
    } else {
        rounded.to_string()
    }
}

/// An inline SVG line plot of `points` (no script, no external resource): a polyline,
/// the first and last day under it and the lowest and highest value beside it. `None`
/// without points.
fn plot(output: &str, points: &[Point]) -> Option<String> {
    let (first, last) = (points.first()?, points.last()?);
    let (low, high) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.value), hi.max(p.value))
    });
    // The plot area, in the picture's own units.
    let (left, right, top, bottom) = (64.0, 592.0, 12.0, 148.0);
    let x = |at: f64| {
        if last.at > first.at {
            left + (at - first.at) / (last.at - first.at) * (right - left)
        } else {
            (left + right) / 2.0
        }
    };
    let y = |v: f64| {
        if high > low {
            bottom - (v - low) / (high - low) * (bottom - top)
        } else {
            (top + bottom) / 2.0
        }
    };
    let step = points.len().div_ceil(PLOT_POINTS).max(1);
    let mut drawn: Vec<&Point> = points.iter().step_by(step).collect();
    if drawn.last().is_some_and(|p| !std::ptr::eq(*p, last)) {
        drawn.push(last);
    }
    if drawn.len() == 1 {
        // One point: a line of no length, drawn as a dot by its round caps.
        drawn.push(last);
    }
    let coordinates: Vec<String> = drawn
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.value)))
        .collect();
    let name = esc(output);
    let (low_text, high_text) = (esc(&axis_number(low)), esc(&axis_number(high)));
    let (first_day, last_day) = (esc(&first.day), esc(&last.day));
    Some(format!(
        "<svg id=\"plot-{name}\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"172\" viewBox=\"0 0 600 172\" role=\"img\" aria-label=\"{name} from {first_day} to {last_day}, {low_text} to {high_text}\">\
<title>{name}</title>\
<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#bbb\"/>\
<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#bbb\"/>\
<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\" stroke-linecap=\"round\" stroke-linejoin=\"round\" points=\"{points}\"/>\
<text class=\"max\" x=\"{label_x}\" y=\"{high_y}\" text-anchor=\"end\" font-size=\"12\">{high_text}</text>\
<text class=\"min\" x=\"{label_x}\" y=\"{bottom}\" text-anchor=\"end\" font-size=\"12\">{low_text}</text>\
<text class=\"first\" x=\"{left}\" y=\"166\" text-anchor=\"start\" font-size=\"12\">{first_day}</text>\
<text class=\"last\" x=\"{right}\" y=\"166\" text-anchor=\"end\" font-size=\"12\">{last_day}</text>\
</svg>",
        points = coordinates.join(" "),
        label_x = left - 6.0,
        high_y = top + 8.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(at: &str, value: Value) -> ArchivedEntry {
        ArchivedEntry {
            method: "get_bodyweight".into(),
            at: Some(at.into()),
            day: chrono::NaiveDate::parse_from_str(&at[..10], "%Y-%m-%d").ok(),
            value,
        }
    }

    #[test]
    fn a_plot_draws_every_point_with_its_range_and_days() {
        let entries = vec![
            entry("2026-11-02T07:00:00", json!({"value": 75.5})),
            entry("2026-11-01T07:00:00", json!({"value": 75.25})),
            entry("2026-11-03", json!({"value": "74.9"})),
            entry("2026-11-04T07:00:00", json!({"value": "n/a"})),
            entry("2026-11-05T07:00:00", json!({"fat": 20.1})),
        ];
        let points = points(&entries);
        assert_eq!(points.len(), 3, "{points:?}");
        assert_eq!(points[0].day, "2026-11-01", "time order");
        let svg = plot("body-weight", &points).expect("a plot");
        assert!(svg.starts_with("<svg id=\"plot-body-weight\""), "{svg}");
        let polyline = svg
            .split("points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a polyline");
        let xy: Vec<(f64, f64)> = polyline
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(xy.len(), 3, "{polyline}");
        assert_eq!(xy[0].0, 64.0, "the first point at the left edge");
        assert_eq!(xy[2].0, 592.0, "the last at the right edge");
        assert_eq!(xy[1].1, 12.0, "the highest value at the top");
        assert_eq!(xy[2].1, 148.0, "the lowest at the bottom");
        for label in [">75.5<", ">74.9<", ">2026-11-01<", ">2026-11-03<"] {
            assert!(svg.contains(label), "{label}: {svg}");
        }
        assert!(!svg.contains("<script"), "{svg}");
    }

    #[test]
    fn outputs_without_numeric_values_get_no_plot_and_names_are_escaped() {
        let entries = vec![entry("2026-11-02T07:00:00", json!({"value": "high"}))];
        assert_eq!(plot("x", &points(&entries)), None);
        let one = points(&[entry("2026-11-02T07:00:00", json!({"value": 3}))]);
        let svg = plot("a<b>\"c", &one).expect("one point is plotted");
        assert!(svg.contains("id=\"plot-a&lt;b&gt;&quot;c\""), "{svg}");
        assert!(!svg.contains("a<b>"), "{svg}");
    }

    #[test]
    fn long_series_are_thinned_but_keep_their_ends_and_range() {
        let entries: Vec<ArchivedEntry> = (0..2000)
            .map(|i| {
                let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    + chrono::Duration::minutes(i);
                entry(
                    &at.format("%Y-%m-%dT%H:%M:%S").to_string(),
                    json!({"value": if i == 1001 { 200 } else { 60 + i % 5 }}),
                )
            })
            .collect();
        let svg = plot("heart", &points(&entries)).expect("a plot");
        let drawn = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let n = drawn.split(' ').count();
        assert!(n <= PLOT_POINTS + 1, "{n} points drawn");
        assert!(drawn.starts_with("64.0,148.0 "), "the first entry: {drawn}");
        assert!(drawn.ends_with(" 592.0,144.1"), "the last entry: {drawn}");
        assert!(
            svg.contains(">200<") && svg.contains(">60<"),
            "the range of every entry"
        );
    }
}
