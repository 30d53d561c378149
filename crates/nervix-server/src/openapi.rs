//! The served OpenAPI document: what every route has in common ([`Contract`]), and the
//! schemas of request fields whose rules a `#[schema(...)]` literal cannot state (patterns
//! built from the same constants the parsers in `nervix_core` check).
//!
//! The document is a contract: a request it calls valid is accepted (or refused only for the
//! state of the platform: 401, 402, 403, 404, 409, 410, 413, 429), and a request it calls
//! invalid is refused. `.ci/schemathesis` holds the server to that.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType,
    Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};

use crate::config::Config;
use crate::error::PROBLEM_JSON;

/// The characters Rust's `str::trim` removes (Unicode `White_Space`), as a regex class that
/// ECMA-262, Python and Rust regexes all read alike. Fields the server trims say so in their
/// pattern with this class, so that the pattern accepts exactly what the parser accepts.
const WS: &str = r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Any character that `str::trim` keeps.
const NOT_WS: &str =
    r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The name of the bearer security scheme every authenticated route names.
pub const BEARER: &str = "bearer";

/// Cross-cutting additions to the document built from the routes: the bearer scheme, the
/// problem responses every route (or every route of a kind) can give, problem+json as the
/// media type of every error, and the limits that come from the configuration.
pub struct Contract {
    /// Routes limited per client IP (429 when over the limit).
    pub ip_limited: &'static [&'static str],
    /// The largest request body, in bytes (413 above it).
    pub body_limit: usize,
    /// The largest task reward, in cents (`NERVIX_MAX_REWARD`).
    pub max_reward_cents: i64,
}

impl Contract {
    pub fn new(config: &Config, ip_limited: &'static [&'static str]) -> Self {
        Contract {
            ip_limited,
            body_limit: config.body_limit,
            max_reward_cents: config.max_reward_cents,
        }
    }
}

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(bearer_description()))
                    .build(),
            ),
        );
        components
            .schemas
            .insert("Problem".into(), problem_schema());
        components
            .schemas
            .insert("FieldError".into(), field_error_schema());
        components
            .schemas
            .insert("Reward".into(), money(1, self.max_reward_cents).into());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ip_limited = self.ip_limited.contains(&path.as_str());
            for op in operations(item) {
                self.operation(op, ip_limited);
            }
        }
    }
}

/// The bearer scheme's description: where tokens come from, and what each scope allows.
fn bearer_description() -> String {
    let mut text = String::from(
        "A token from `POST /v1/enroll/{enrollment_id}/respond` or `POST /v1/auth/token` \
         (unrestricted: whatever the agent's role allows), or from `POST /v1/auth/tokens` \
         (only the scopes it names). Each operation lists the scopes it needs; a token \
         without them gets 403 `insufficient_scope`. Scopes:\n",
    );
    for scope in nervix_core::Scope::ALL {
        text.push_str(&format!("- `{scope}`: {}\n", scope.description()));
    }
    text
}

/// The scopes an operation's bearer requirement lists.
fn required_scopes(op: &Operation) -> nervix_core::Scopes {
    // `SecurityRequirement` keeps its map private; its JSON form is the document's.
    let security = serde_json::to_value(&op.security).unwrap_or_default();
    security
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|alternative| alternative.get(BEARER)?.as_array())
        .flatten()
        .filter_map(|name| nervix_core::Scope::parse(name.as_str()?))
        .collect()
}

impl Contract {
    fn operation(&self, op: &mut Operation, ip_limited: bool) {
        let bearer = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let has_body = op.request_body.is_some();
        let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let has_query = op.parameters.as_ref().is_some_and(|p| {
            p.iter().any(|p| {
                matches!(
                    p.parameter_in,
                    utoipa::openapi::path::ParameterIn::Query
                        | utoipa::openapi::path::ParameterIn::Header
                )
            })
        });
        let add = |op: &mut Operation, status: &str, description: &str| {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| problem(description).into());
        };
        if has_body || has_params {
            add(
                op,
                "400",
                "`bad_request`: malformed JSON, or a path or query parameter of the wrong type.",
            );
        }
        if bearer {
            add(
                op,
                "401",
                "`unauthorized`: the bearer token is missing, invalid, expired or revoked.",
            );
            let scopes = required_scopes(op);
            let scope_refusal = if scopes.is_empty() {
                String::new()
            } else {
                format!("`insufficient_scope`: the token lacks `{scopes}`; ")
            };
            add(
                op,
                "403",
                &format!("{scope_refusal}`agent_suspended`, or the caller may not do this."),
            );
            op.responses
                .responses
                .entry("429".into())
                .or_insert_with(|| {
                    too_many("`rate_limited`: over the agent's request rate.").into()
                });
        }
        if ip_limited {
            op.responses
                .responses
                .entry("429".into())
                .or_insert_with(|| {
                    too_many("`rate_limited`: over the client address's request rate.").into()
                });
        }
        if has_body {
            add(
                op,
                "413",
                &format!(
                    "`payload_too_large`: the body is larger than {} bytes.",
                    self.body_limit
                ),
            );
            add(
                op,
                "415",
                "`unsupported_media_type`: the body is not `application/json`.",
            );
        }
        if has_body || has_query {
            add(
                op,
                "422",
                "`validation_failed`: `errors` names each field that breaks a rule.",
            );
        }
        add(
            op,
            "408",
            "`timeout`: the request took longer than the server allows.",
        );
        add(
            op,
            "500",
            "`internal_error`: the cause is logged, never shown.",
        );
        // Every error is problem+json, whatever the route's attribute named.
        for (status, response) in op.responses.responses.iter_mut() {
            let is_error = status.starts_with('4') || status.starts_with('5');
            if let (true, RefOr::T(r)) = (is_error, response) {
                let description = r.description.clone();
                let headers = std::mem::take(&mut r.headers);
                let mut fixed = problem(&description);
                fixed.headers = headers;
                *r = fixed;
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn too_many(description: &str) -> Response {
    let mut r = problem(description);
    r.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds after which a retry may succeed."))
            .build(),
    );
    r
}

/// RFC 9457 problem details as the server writes them (`crate::error::Problem`).
fn problem_schema() -> RefOr<Schema> {
    let string = |d: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(d))
    };
    ObjectBuilder::new()
        .description(Some(
            "RFC 9457 problem details (`application/problem+json`).",
        ))
        .property(
            "type",
            string("`urn:nervix:problem:{code}`.").pattern(Some("^urn:nervix:problem:[a-z0-9_]+$")),
        )
        .required("type")
        .property("title", string("The status's reason phrase."))
        .required("title")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599)),
        )
        .required("status")
        .property("detail", string("What went wrong, for a person."))
        .required("detail")
        .property(
            "code",
            string("Stable snake_case machine code.").pattern(Some("^[a-z0-9_]+$")),
        )
        .required("code")
        .property(
            "errors",
            ArrayBuilder::new()
                .items(Ref::from_schema_name("FieldError"))
                .min_items(Some(1))
                .description(Some("The failing fields (validation errors only).")),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

fn field_error_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property(
            "field",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The failing field, e.g. `tasks[2].reward` or `body`.")),
        )
        .required("field")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// `GET /v1/openapi.json` itself, which is served outside the routers.
pub fn document_operation() -> PathItem {
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some("This OpenAPI document"))
            .operation_id(Some("openapi"))
            .tag("platform")
            .response(
                "200",
                ResponseBuilder::new()
                    .description("OpenAPI 3.1 document")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    ),
            ),
    )
}

/// The document as served: the routers' description plus [`Contract`].
pub fn served(mut openapi: OpenApi, contract: &Contract) -> OpenApi {
    openapi
        .paths
        .paths
        .insert("/v1/openapi.json".into(), document_operation());
    utoipa::Modify::modify(contract, &mut openapi);
    openapi
}

// ---- field schemas (`#[schema(schema_with = ...)]`) ------------------------------------------

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable(s: Object) -> Object {
    let mut s = s;
    s.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    s
}

/// A string the server trims, then requires to be `min..=max` characters.
fn trimmed_chars(min: usize, max: usize) -> String {
    // The first and last kept characters, and up to max-2 characters of anything between.
    let inner = max.saturating_sub(2);
    let body = if min == 0 {
        format!("(?:{NOT_WS}(?:[\\s\\S]{{0,{inner}}}{NOT_WS})?)?")
    } else {
        format!("{NOT_WS}(?:[\\s\\S]{{0,{inner}}}{NOT_WS})?")
    };
    format!("^{WS}*{body}{WS}*$")
}

/// A string holding `bytes` bytes in standard padded base64, which the server trims first.
fn base64_bytes(bytes: usize) -> String {
    let full = bytes / 3 * 4;
    let tail = match bytes % 3 {
        // The unused low bits of the last character must be zero.
        1 => "[A-Za-z0-9+/][AQgw]==".to_owned(),
        2 => "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=".to_owned(),
        _ => String::new(),
    };
    format!("^{WS}*[A-Za-z0-9+/]{{{full}}}{tail}{WS}*$")
}

/// `agent_id` at enrollment (`nervix_core::AgentHandle`).
pub fn handle() -> Object {
    use nervix_core::AgentHandle;
    string()
        .min_length(Some(AgentHandle::MIN_LEN))
        .max_length(Some(AgentHandle::MAX_LEN))
        .pattern(Some(format!(
            "^(?!(?:{})$)[a-z0-9][a-z0-9._-]*$",
            crate::app::auth::RESERVED_HANDLES.join("|")
        )))
        .description(Some(format!(
            "3–64 characters of `[a-z0-9._-]`, starting with a letter or digit; not one of the \
             reserved handles ({}).",
            crate::app::auth::RESERVED_HANDLES.join(", ")
        )))
        .examples(["alpha-coder"])
        .build()
}

/// A display name (`nervix_core::AgentName`), or null for none.
pub fn agent_name() -> Object {
    nullable(
        string()
            .pattern(Some(trimmed_chars(1, nervix_core::AgentName::MAX_CHARS)))
            .description(Some(
                "1–128 characters, not counting surrounding whitespace.",
            ))
            .examples(["Alpha Coder"])
            .build(),
    )
}

/// One capability tag as a request sends it (`nervix_core::Capabilities::parse_one`).
fn capability_pattern() -> String {
    format!(
        "^{WS}*[A-Za-z0-9._:-]{{1,{}}}{WS}*$",
        nervix_core::Capabilities::MAX_LEN
    )
}

pub fn capability() -> Object {
    string()
        .pattern(Some(capability_pattern()))
        .description(Some(
            "1–64 characters of `[a-z0-9._:-]` (upper case is lowered, surrounding whitespace \
             trimmed).",
        ))
        .build()
}

fn capability_list() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(capability())
        .max_items(Some(nervix_core::Capabilities::MAX))
        .description(Some(
            "At most 64 capability tags; duplicates are merged, the list is kept sorted.",
        ))
}

pub fn capabilities() -> utoipa::openapi::schema::Array {
    capability_list()
        .examples([serde_json::json!(["coding", "research"])])
        .build()
}

pub fn nullable_capabilities() -> utoipa::openapi::schema::Array {
    capability_list()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

/// The scopes a token is asked for with.
pub fn scopes() -> utoipa::openapi::schema::Array {
    let names = nervix_core::Scope::ALL.iter().map(|s| s.as_str());
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .description(Some(
            "The scopes the token keeps (see the bearer scheme); each must be one the \
             presenting token has.",
        ))
        .examples([serde_json::json!([
            "profile:read",
            "tasks:read",
            "money:read"
        ])])
        .build()
}

/// `expires_in` of a minted token, in seconds.
pub fn token_lifetime() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(crate::app::auth::MIN_TOKEN_TTL.num_seconds()))
        .maximum(Some(crate::config::TOKEN_TTL_SECS))
        .description(Some(
            "Seconds until the token expires: at least 60, at most the lifetime of a login \
             token (90 days), which is also the default.",
        ))
        .build()
}

pub fn metadata() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "A JSON object of at most 16 KiB serialized (null: none, or unchanged).",
        ))
        .build()
}

pub fn max_concurrent_tasks() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
        .maximum(Some(100))
        .description(Some("1–100 tasks held at once; default 3."))
        .build()
}

pub fn public_key() -> Object {
    string()
        .pattern(Some(base64_bytes(32)))
        .description(Some(
            "Ed25519 public key: 32 bytes, standard padded base64. It must be a usable key (a \
             curve point not of small order): others are refused with 422.",
        ))
        .examples(["YcFOtkokyKhJjWSRtr/xEqSC/oZJKA1khARwt1wCvRc="])
        .build()
}

/// X25519 public key for encrypted messages; null for none (at enrollment) or to remove it.
pub fn encryption_key() -> Object {
    nullable(
        string()
            .pattern(Some(base64_bytes(32)))
            .description(Some(
                "X25519 public key, 32 bytes, standard padded base64; null: none.",
            ))
            .build(),
    )
}

pub fn signature() -> Object {
    string()
        .pattern(Some(base64_bytes(64)))
        .description(Some(
            "Ed25519 signature of the challenge's UTF-8 bytes: 64 bytes, standard padded base64.",
        ))
        .build()
}

pub fn task_title() -> Object {
    string()
        .pattern(Some(trimmed_chars(
            1,
            nervix_core::TaskSpec::MAX_TITLE_CHARS,
        )))
        .description(Some(
            "1–500 characters, not counting surrounding whitespace.",
        ))
        .examples(["Summarise the paper"])
        .build()
}

pub fn workflow_name() -> Object {
    string()
        .pattern(Some(trimmed_chars(1, 200)))
        .description(Some(
            "1–200 characters, not counting surrounding whitespace.",
        ))
        .examples(["Research pipeline"])
        .build()
}

/// A key of a workflow's task, or an entry of its `depends_on`: not blank.
pub fn workflow_key() -> Object {
    string()
        .pattern(Some(NOT_WS.to_owned()))
        .description(Some("Not blank; unique within the workflow."))
        .build()
}

/// An operator grant's amount.
pub fn grant_amount() -> RefOr<Schema> {
    money(1, crate::app::economy::MAX_GRANT_CENTS).into()
}

/// An amount for the bonus pool or a withdrawal: positive, at most what one grant may be.
pub fn transfer_amount() -> RefOr<Schema> {
    money(1, crate::app::economy::MAX_GRANT_CENTS).into()
}

/// A withdrawal's destination (`nervix_core::economy::Destination`): trimmed, 1–256
/// characters, no control characters.
pub fn destination() -> Object {
    const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
    let max = nervix_core::economy::Destination::MAX_CHARS;
    let edge = format!("[^\\s{CONTROL}]");
    let inner = max.saturating_sub(2);
    string()
        .pattern(Some(format!(
            "^{WS}*{edge}(?:[^{CONTROL}]{{0,{inner}}}{edge})?{WS}*$"
        )))
        .description(Some(
            "Where to pay: 1–256 characters, no control characters.",
        ))
        .build()
}

/// A role an admin may give (`POST /v1/admin/agents/{id}/role`).
pub fn assignable_role() -> Object {
    one_of_names(
        &[nervix_core::Role::Agent, nervix_core::Role::Reviewer],
        "agent or reviewer",
    )
}

/// A withdrawal's status, as a filter.
pub fn withdrawal_status() -> Object {
    one_of_names(
        nervix_store::WithdrawalStatus::ALL,
        "A withdrawal's status.",
    )
}

/// A task's reward: `Reward`, whose maximum comes from the configuration.
pub fn reward() -> Ref {
    Ref::from_schema_name("Reward")
}

/// A reputation as a request states it (`min_reputation`): 0–100 with two decimals, or null.
pub fn min_reputation() -> Schema {
    let mut s = money(0, nervix_core::Reputation::MAX.hundredths());
    if let Schema::OneOf(one_of) = &mut s {
        one_of
            .items
            .push(ObjectBuilder::new().schema_type(Type::Null).build().into());
    }
    s
}

/// Money as a request may send it (`nervix_core::Money`): a JSON number or a decimal string with
/// at most two decimals, here between `min_cents` and `max_cents`.
fn money(min_cents: i64, max_cents: i64) -> Schema {
    let max = format!("{}.{:02}", max_cents / 100, max_cents % 100);
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .multiple_of(Some(0.01))
        .maximum(Some(max_cents as f64 / 100.0));
    let number = if min_cents > 0 {
        number.exclusive_minimum(Some(0))
    } else {
        number.minimum(Some(0))
    };
    OneOfBuilder::new()
        .item(number)
        .item(
            string()
                .pattern(Some(format!(
                    "^{WS}*(?:{}){WS}*$",
                    decimal_range(min_cents, max_cents)
                )))
                .examples(["50.00"]),
        )
        .description(Some(format!(
            "A JSON number or a decimal string with at most two decimals, {} to {max}.",
            if min_cents > 0 { "more than 0" } else { "0" }
        )))
        .build()
        .into()
}

/// A regex for the decimal strings `Money::from_str` reads as `lo..=hi` cents (`lo` 0 or 1):
/// leading zeros allowed, at most two decimals, `-` only before zero.
fn decimal_range(lo: i64, hi: i64) -> String {
    let (hi_int, hi_frac) = (hi / 100, hi % 100);
    let mut alts = Vec::new();
    let any_frac = r"(?:\.[0-9]{1,2})?";
    // Whole part 1..hi_int-1: any fraction.
    if hi_int >= 2 {
        alts.push(format!("0*(?:{}){any_frac}", int_range(1, hi_int - 1)));
    }
    // Whole part hi_int (at least 1): fraction up to hi_frac.
    if hi_int >= 1 {
        alts.push(format!("0*{hi_int}{}", frac_upto(hi_frac, false)));
    }
    // Whole part 0.
    let zero_frac_max = if hi_int >= 1 { 99 } else { hi_frac };
    if lo == 0 {
        alts.push(format!("-?0+{}", frac_upto(0, false)));
    }
    if zero_frac_max >= 1 {
        alts.push(format!("0+{}", frac_upto(zero_frac_max, true)));
    }
    alts.join("|")
}

/// An optional fraction (`.d` or `.dd`) worth at most `max` cents; with `positive`, worth at
/// least one cent (and then not optional).
fn frac_upto(max: i64, positive: bool) -> String {
    let mut alts = Vec::new();
    if !positive {
        alts.push(String::new());
    }
    // `.d` is d*10 cents.
    let one_lo = i64::from(positive);
    let one_hi = max / 10;
    if one_lo <= one_hi {
        alts.push(format!(r"\.[{one_lo}-{one_hi}]"));
    }
    // `.dd`.
    let two_lo = i64::from(positive);
    if two_lo <= max {
        alts.push(format!(
            r"\.(?:{})",
            fixed_range(&format!("{two_lo:02}"), &format!("{max:02}"))
        ));
    }
    format!("(?:{})", alts.join("|"))
}

/// A regex for the canonical decimal integers `lo..=hi` (no leading zeros, `lo >= 1`).
fn int_range(lo: i64, hi: i64) -> String {
    let mut alts = Vec::new();
    let (lo_len, hi_len) = (lo.to_string().len(), hi.to_string().len());
    for len in lo_len..=hi_len {
        let exp = u32::try_from(len).unwrap_or(u32::MAX);
        let first = 10_i64.checked_pow(exp - 1).unwrap_or(i64::MAX);
        let last = 10_i64.checked_pow(exp).map_or(i64::MAX, |p| p - 1);
        let (a, b) = (lo.max(first), hi.min(last));
        if a <= b {
            alts.push(fixed_range(&a.to_string(), &b.to_string()));
        }
    }
    alts.join("|")
}

/// A regex for the digit strings of one length from `lo` to `hi`.
fn fixed_range(lo: &str, hi: &str) -> String {
    let (l, h) = (lo.as_bytes(), hi.as_bytes());
    let Some((&l0, l_rest)) = l.split_first() else {
        return String::new();
    };
    let (h0, h_rest) = (h[0], &h[1..]);
    let n = l_rest.len();
    let tail = if n == 0 {
        String::new()
    } else {
        format!("[0-9]{{{n}}}")
    };
    if l0 == h0 {
        let rest = fixed_range(
            std::str::from_utf8(l_rest).unwrap_or_default(),
            std::str::from_utf8(h_rest).unwrap_or_default(),
        );
        return format!("{}{rest}", l0 as char);
    }
    let all_zero = l_rest.iter().all(|&c| c == b'0');
    let all_nine = h_rest.iter().all(|&c| c == b'9');
    let mut alts = Vec::new();
    let from = if all_zero {
        l0
    } else {
        let rest = fixed_range(
            std::str::from_utf8(l_rest).unwrap_or_default(),
            &"9".repeat(n),
        );
        alts.push(format!("{}{rest}", l0 as char));
        l0 + 1
    };
    let to = if all_nine { h0 } else { h0 - 1 };
    if from <= to {
        alts.push(format!("[{}-{}]{tail}", from as char, to as char));
    }
    if !all_nine {
        let rest = fixed_range(
            &"0".repeat(n),
            std::str::from_utf8(h_rest).unwrap_or_default(),
        );
        alts.push(format!("{}{rest}", h0 as char));
    }
    format!("(?:{})", alts.join("|"))
}

/// The wire names of a `nervix_core::wire_enum!`, for a string that must be one of them.
fn one_of_names<T: std::fmt::Display>(all: &[T], description: &str) -> Object {
    string()
        .enum_values(Some(all.iter().map(ToString::to_string)))
        .description(Some(description))
        .build()
}

pub fn level() -> Object {
    one_of_names(nervix_core::Level::ALL, "A reputation level.")
}

pub fn task_status() -> Object {
    one_of_names(nervix_core::TaskStatus::ALL, "A task's status.")
}

pub fn complexity() -> Object {
    one_of_names(
        nervix_core::Complexity::ALL,
        "How hard a task is; levels gate it.",
    )
}

pub fn kind() -> Object {
    let mut s = nullable(one_of_names(
        nervix_core::TaskKind::ALL,
        "What shape the submission's `content` has (default `text`).",
    ));
    if let Some(names) = s.enum_values.as_mut() {
        names.push(serde_json::Value::Null);
    }
    s
}

/// A page cursor as `Uuid::parse_str` reads it (any of its spellings), or empty.
pub fn cursor() -> Object {
    string()
        .pattern(Some(format!("^(?:|{})$", uuid_any_spelling())))
        .description(Some(
            "`next_cursor` of the previous page (empty: the first page).",
        ))
        .build()
}

fn uuid_any_spelling() -> String {
    const HEX: &str = "[0-9a-fA-F]";
    let hyphenated = format!("{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}");
    format!("{HEX}{{32}}|{hyphenated}|\\{{{hyphenated}\\}}|urn:uuid:{hyphenated}")
}

/// A UUID as `Uuid::parse_str` reads it, surrounding whitespace trimmed (a channel's id in a
/// request).
pub fn channel_id() -> Object {
    string()
        .pattern(Some(format!("^{WS}*(?:{}){WS}*$", uuid_any_spelling())))
        .description(Some("A channel's UUID."))
        .build()
}

/// An agent named in a message or a channel's members: its UUID or its handle.
pub fn recipient() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(nervix_core::message::MAX_RECIPIENT_CHARS))
        .description(Some("An agent's UUID or handle (`agent_id`)."))
        .examples(["beta-writer"])
        .build()
}

/// A message's payload (`nervix_core::message::parse_payload`): canonical standard base64,
/// no whitespace, 1 byte to 24 KiB decoded.
pub fn payload() -> Object {
    string()
        .pattern(Some(
            "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
        ))
        .min_length(Some(4))
        .max_length(Some(nervix_core::message::MAX_PAYLOAD_CHARS))
        .description(Some(
            "The message's bytes in standard padded base64, no whitespace: 1 byte to 24 KiB \
             (32 KiB of base64). For an encrypted message, the NaCl `crypto_box` output \
             (tag and ciphertext, as tweetnacl's `nacl.box` or libsodium's `crypto_box_easy` \
             make it).",
        ))
        .examples(["8/ncbz+UAOUqfftLPTMF2Q=="])
        .build()
}

/// A `crypto_box` nonce: 24 bytes.
pub fn nonce() -> Object {
    string()
        .pattern(Some(base64_bytes(nervix_core::message::NONCE_BYTES)))
        .description(Some(
            "The `crypto_box` nonce: 24 bytes, standard padded base64.",
        ))
        .examples(["aWlu6VW2K3PNYr2odfxz1oIZ4ANrego3"])
        .build()
}

/// A nonce, or null for none (a message that is not encrypted needs none).
pub fn nullable_nonce() -> Object {
    nullable(nonce())
}

/// A channel's name (`nervix_core::message::ChannelName`).
pub fn channel_name() -> Object {
    const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
    let max = nervix_core::message::ChannelName::MAX_CHARS;
    let edge = format!("[^\\s{CONTROL}]");
    let inner = max.saturating_sub(2);
    string()
        .pattern(Some(format!(
            "^{WS}*{edge}(?:[^{CONTROL}]{{0,{inner}}}{edge})?{WS}*$"
        )))
        .description(Some(
            "1–64 characters, not counting surrounding whitespace; no control characters.",
        ))
        .examples(["research-team"])
        .build()
}

/// Agents to put in a channel: UUIDs or handles, at most 100 per request.
pub fn members(min: usize) -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(recipient())
        .min_items(Some(min))
        .max_items(Some(nervix_core::message::Members::MAX))
        .description(Some(
            "Agents by UUID or handle, at most 100; repeats count once. A channel has at most \
             1000 members.",
        ))
        .build()
}

/// A new channel's first members besides its creator (may be empty).
pub fn initial_members() -> utoipa::openapi::schema::Array {
    members(0)
}

/// Members to add: at least one.
pub fn added_members() -> utoipa::openapi::schema::Array {
    members(1)
}

/// A workflow task's `depends_on`: keys of its siblings.
pub fn workflow_dependencies() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(workflow_key())
        .max_items(Some(nervix_core::dag::MAX_WORKFLOW_TASKS))
        .description(Some(
            "Keys of this workflow's tasks that must complete first (no cycles).",
        ))
        .build()
}

/// `POST /v1/tasks`'s `depends_on`: task UUIDs.
pub fn task_dependencies() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(
            string()
                .pattern(Some(format!("^{WS}*(?:{}){WS}*$", uuid_any_spelling())))
                .description(Some("A task's UUID.")),
        )
        .max_items(Some(nervix_core::dag::MAX_WORKFLOW_TASKS))
        .description(Some(
            "UUIDs of existing tasks that must complete first; each must still be able to \
             complete (not failed, expired or cancelled).",
        ))
        .build()
}

/// A mark-read (`crate::wire::notifications::MarkReadBody`): `{"ids": [...]}` (1 to 200
/// notification ids) or `{"all": true}`.
pub fn mark_read_body() -> RefOr<Schema> {
    let max = crate::app::notifications::MAX_MARK_IDS;
    let ids = ObjectBuilder::new()
        .property(
            "ids",
            ArrayBuilder::new()
                .items(
                    string()
                        .pattern(Some(format!("^{WS}*(?:{}){WS}*$", uuid_any_spelling())))
                        .description(Some("A notification's id.")),
                )
                .min_items(Some(1))
                .max_items(Some(max))
                .description(Some(format!(
                    "1 to {max} of the caller's notification ids; others' match nothing."
                ))),
        )
        .required("ids")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let all = ObjectBuilder::new()
        .property(
            "all",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true]))
                .description(Some("Every unread notification of the caller's.")),
        )
        .required("all")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    OneOfBuilder::new()
        .item(ids)
        .item(all)
        .description(Some(
            "`{\"ids\": [...]}` or `{\"all\": true}`: which notifications to mark read.",
        ))
        .into()
}

/// An announcement's title (`nervix_core::notice::Announcement`).
pub fn announcement_title() -> Object {
    use nervix_core::notice::Announcement;
    string()
        .pattern(Some(trimmed_chars(1, Announcement::MAX_TITLE_CHARS)))
        .description(Some(format!(
            "1–{} characters, not counting surrounding whitespace.",
            Announcement::MAX_TITLE_CHARS
        )))
        .examples(["Maintenance tonight"])
        .build()
}

/// An announcement's body (`nervix_core::notice::Announcement`).
pub fn announcement_body() -> Object {
    use nervix_core::notice::Announcement;
    string()
        .pattern(Some(trimmed_chars(1, Announcement::MAX_BODY_CHARS)))
        .description(Some(format!(
            "1–{} characters, not counting surrounding whitespace.",
            Announcement::MAX_BODY_CHARS
        )))
        .examples(["The API is read-only from 22:00 to 22:15 UTC."])
        .build()
}

/// A lone task has no `key`: absent or null.
pub fn no_key() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Only tasks inside a workflow have a key."))
        .build()
}

/// `Idempotency-Key`: visible ASCII as HTTP carries it (surrounding whitespace is not part of
/// a header value), 1–255 characters.
pub fn idempotency_key() -> Object {
    string()
        .pattern(Some(r"^[!-~](?:[\t -~]{0,253}[!-~])?$"))
        .description(Some(
            "Repeats with the same key and body get the first response; the same key with \
             another body is 422 `idempotency_key_reused`.",
        ))
        .build()
}

/// The `Idempotency-Key` header of the idempotent posts (read by `crate::http::idempotency_key`).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    #[param(rename = "Idempotency-Key", schema_with = idempotency_key)]
    pub idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        let config = Config::for_data_dir("unused".into());
        let (_, openapi) = crate::api::router().split_for_parts();
        let served = served(openapi, &Contract::new(&config, crate::api::IP_LIMITED));
        serde_json::to_value(served).expect("the document serializes")
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// (method, path, operation) for every operation of the document.
    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                out.push((method.clone(), path.clone(), op));
            }
        }
        out
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "too few references: {found:?}");
        for r in found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_error_is_a_problem() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().expect("responses") {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let content = response["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    [PROBLEM_JSON],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content[PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }

    #[test]
    fn routes_document_what_every_route_of_their_kind_can_return() {
        let doc = document();
        let ops = operations(&doc);
        let mut bearer = 0;
        let mut bodies = 0;
        for (method, path, op) in &ops {
            let has = |status: &str| op["responses"].get(status).is_some();
            let names_bearer = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get(BEARER).is_some()));
            if names_bearer {
                bearer += 1;
                for status in ["401", "403", "429"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            if op.get("requestBody").is_some() {
                bodies += 1;
                for status in ["400", "413", "422"] {
                    assert!(has(status), "{method} {path} lacks {status}");
                }
            }
            if crate::api::IP_LIMITED.contains(&path.as_str()) {
                assert!(has("429"), "{method} {path} lacks 429");
            }
            assert!(has("500"), "{method} {path} lacks 500");
        }
        assert!(
            bearer > 10 && bodies > 5,
            "{bearer} bearer routes, {bodies} bodies"
        );
        assert!(
            doc["components"]["securitySchemes"][BEARER]["scheme"] == "bearer",
            "no bearer scheme"
        );
    }

    #[test]
    fn the_document_describes_itself() {
        let doc = document();
        assert!(doc["paths"]["/v1/openapi.json"]["get"].is_object());
    }

    /// The patterns read the way the parsers do: each is checked against the parser it states.
    #[test]
    fn patterns_agree_with_the_parsers() {
        let regex = regex_of;
        let pattern = |o: Object| o.pattern.expect("a pattern");
        let caps = regex(&capability_pattern());
        for ok in ["coding", " Coding\u{3000}", "a.b_c:d-e", &"x".repeat(64)] {
            assert!(caps.is_valid(&ok.into()), "{ok:?}");
            assert!(
                nervix_core::Capabilities::parse_one("c", ok).is_ok(),
                "{ok:?}"
            );
        }
        for bad in ["", " ", "a b", &"x".repeat(65), "é", "\u{feff}a"] {
            assert!(!caps.is_valid(&bad.into()), "{bad:?}");
            assert!(
                nervix_core::Capabilities::parse_one("c", bad).is_err(),
                "{bad:?}"
            );
        }
        let handle = regex(&pattern(handle()));
        for h in ["admin", "admins", "xadmin", "root", "roots", "alpha-coder"] {
            assert_eq!(
                handle.is_valid(&h.into()),
                crate::app::auth::enrollable_handle(h).is_ok(),
                "{h}"
            );
        }
        let title = regex(&pattern(task_title()));
        for ok in ["a", " a ", &format!(" {} ", "é".repeat(500)), "a\n\nb"] {
            assert!(title.is_valid(&ok.into()), "{ok:?}");
        }
        for bad in ["", " \u{85}\u{2028}", &"é".repeat(501)] {
            assert!(!title.is_valid(&bad.into()), "{bad:?}");
        }
        let title = regex(&pattern(announcement_title()));
        let body = regex(&pattern(announcement_body()));
        let long = "é".repeat(nervix_core::notice::Announcement::MAX_BODY_CHARS);
        for (t, b) in [("a", "b"), (" a ", long.as_str())] {
            assert!(title.is_valid(&t.into()) && body.is_valid(&b.into()));
            assert!(nervix_core::notice::Announcement::parse(t, b).is_ok());
        }
        let longer = format!("{long}é");
        for (t, b) in [(" ", "b"), ("a", longer.as_str())] {
            assert!(!(title.is_valid(&t.into()) && body.is_valid(&b.into())));
            assert!(nervix_core::notice::Announcement::parse(t, b).is_err());
        }
        let key = regex(&pattern(public_key()));
        let sig = regex(&pattern(signature()));
        let b64 = |n: usize| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; n])
        };
        assert!(key.is_valid(&b64(32).into()) && !key.is_valid(&b64(31).into()));
        assert!(sig.is_valid(&format!(" {} ", b64(64)).into()) && !sig.is_valid(&b64(65).into()));
        // A last character with bits the decoder refuses.
        let mut loose = b64(64);
        loose.replace_range(85..86, "B");
        assert!(!sig.is_valid(&loose.into()));
    }

    #[test]
    fn money_patterns_agree_with_money() {
        use nervix_core::Money;
        for (lo, hi) in [
            (1, 10_000_000),
            (0, 10_000),
            (1, 150),
            (1, 99),
            (0, 5),
            (1, i64::MAX),
        ] {
            let re = regex_of(&format!("^(?:{})$", decimal_range(lo, hi)));
            let samples = [
                "0",
                "-0",
                "-0.00",
                "0.0",
                "0.00",
                "0.01",
                "0.1",
                "0.10",
                "0.5",
                "0.99",
                "1",
                "1.0",
                "1.5",
                "1.50",
                "1.05",
                "1.",
                ".5",
                "01.50",
                "0001",
                "99",
                "99.99",
                "100",
                "100.00",
                "100.01",
                "1.50",
                "1.505",
                "150",
                "149.99",
                "1.51",
                "10000",
                "100000",
                "100000.00",
                "100000.01",
                "99999.99",
                "1000000",
                "-1",
                "1e3",
                "92233720368547758.07",
                "92233720368547758.08",
                "92233720368547759",
            ];
            for s in samples {
                let parsed = s.parse::<Money>().ok().map(Money::cents);
                let accepted = parsed.is_some_and(|c| (lo..=hi).contains(&c));
                assert_eq!(re.is_valid(&s.into()), accepted, "{s:?} in [{lo}, {hi}]");
            }
        }
    }

    fn regex_of(pattern: &str) -> jsonschema::Validator {
        jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": pattern}))
            .expect("a valid pattern")
    }
}
