//! Property tests of the parsing on the request path. 4 properties x 25,000 cases = 100,000
//! cases per run.
//!
//! The parsing properties generate inputs whose right answer is known from how they were
//! built: a well-formed value, or one with chosen defects whose first failing check is
//! known. The code must give exactly that answer (the value, or the exact error), and every
//! kind of answer must make up a fair share of the run, so a parser that refuses everything,
//! or a generator that stopped producing one kind, fails.

// Tests and tools may lock and read the clock as they like: the rules are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use agentgate::directory::Resolution;
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::token::{parse_compact, TokenVersion, VerifiedToken};
use agentgate::identity::{bearer_token, CallerKind, TokenError};
use agentgate::policy::input::{
    build_input, InputParts, PreparedDirectory, RequestFacts, RouteInput,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const CASES: u32 = 25_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `CASES` cases of `strategy` through `check`, which asserts the exact expected answer
/// and returns the class of that answer. Fails on the first wrong answer; otherwise returns
/// how many cases fell in each class.
fn run_classified<S: Strategy>(
    strategy: S,
    check: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
) -> BTreeMap<&'static str, u32> {
    let counts = RefCell::new(BTreeMap::new());
    let result = TestRunner::new(config()).run(&strategy, |case| {
        let class = check(case)?;
        *counts.borrow_mut().entry(class).or_insert(0) += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    counts.into_inner()
}

/// Requires each of `classes` to make up at least 1% of the run, the accepted ones
/// together at least `accepted_percent`, and no class outside the list.
fn assert_shares(
    counts: &BTreeMap<&'static str, u32>,
    accepted: &[&str],
    rejected: &[&str],
    accepted_percent: u32,
) {
    for (class, n) in counts {
        eprintln!("{n:>6} x {class}");
    }
    let total: u32 = counts.values().sum();
    assert_eq!(total, CASES, "cases run: {counts:?}");
    for class in accepted.iter().chain(rejected) {
        let n = counts.get(class).copied().unwrap_or(0);
        assert!(
            n >= CASES / 100,
            "only {n} of {CASES} cases were {class}: {counts:?}"
        );
    }
    for class in counts.keys() {
        assert!(
            accepted.contains(class) || rejected.contains(class),
            "unexpected class {class}: {counts:?}"
        );
    }
    let accepted_total: u32 = accepted.iter().filter_map(|c| counts.get(c)).sum();
    assert!(
        accepted_total >= CASES * accepted_percent / 100,
        "only {accepted_total} of {CASES} cases were valid: {counts:?}"
    );
}

/// The class of an expected answer: `accepted`, or the error's reason code.
fn class_of<T>(expect: &Result<T, TokenError>) -> &'static str {
    match expect {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    }
}

// === Authorization header ===

/// The size cap the authorization property runs with.
const CAP: usize = 128;
/// What the cap allows for the scheme and its space, checked before anything is decoded.
const SCHEME_ALLOWANCE: usize = "Bearer ".len();

/// Authorization header values and the answer they must get.
#[derive(Debug, Clone)]
struct AuthCase {
    values: Vec<Vec<u8>>,
    expect: Result<String, TokenError>,
}

/// Strings matching `pattern`, for patterns built at run time.
fn regex(pattern: &str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(pattern).unwrap()
}

/// `Bearer` in any letter case.
fn bearer_scheme() -> impl Strategy<Value = String> {
    "[bB][eE][aA][rR][eE][rR]"
}

/// A byte that may appear in a header value (visible ASCII, tab, obs-text).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

/// `Bearer`, 1-3 spaces and a token; the answer follows from the token's and the value's
/// byte lengths alone.
fn bearer_with(token: impl Strategy<Value = String>) -> impl Strategy<Value = AuthCase> {
    (bearer_scheme(), 1..=3usize, token).prop_map(|(scheme, spaces, token)| {
        let value = format!("{scheme}{}{token}", " ".repeat(spaces));
        let expect = if token.len() > CAP || value.len() > CAP + SCHEME_ALLOWANCE {
            Err(TokenError::TooLarge)
        } else {
            Ok(token)
        };
        AuthCase {
            values: vec![value.into_bytes()],
            expect,
        }
    })
}

fn authorization_cases() -> impl Strategy<Value = AuthCase> {
    let fits = |spaces: usize| CAP + 1 - spaces;
    prop_oneof![
        // Well-formed, the token within the cap with room for its separator.
        3 => (bearer_scheme(), 1..=3usize).prop_flat_map(move |(scheme, spaces)| {
            let token = regex(&format!("[!-~][\t -~]{{0,{}}}", fits(spaces) - 1));
            (Just(scheme), Just(spaces), token).prop_map(|(scheme, spaces, token)| AuthCase {
                values: vec![format!("{scheme}{}{token}", " ".repeat(spaces)).into_bytes()],
                expect: Ok(token),
            })
        }),
        // Exactly at the cap with one space.
        1 => (bearer_scheme(), regex(&format!("[!-~][\t -~]{{{}}}", CAP - 1))).prop_map(|(scheme, token)| AuthCase {
            values: vec![format!("{scheme} {token}").into_bytes()],
            expect: Ok(token),
        }),
        // Non-ASCII UTF-8 tokens (at most 4 bytes a character: always within the cap).
        2 => (bearer_scheme(), "[^\\x00-\\x20\\x7f][^\\x00-\\x1f\\x7f]{0,30}").prop_map(|(scheme, token)| AuthCase {
            values: vec![format!("{scheme} {token}").into_bytes()],
            expect: Ok(token),
        }),
        // Near and over the cap: the token or the whole value too large.
        2 => bearer_with(regex(&format!("[!-~][\t -~]{{{},{}}}", CAP - 3, CAP + 150))),
        // Anything larger than the cap allows is too large before it is read.
        1 => proptest::collection::vec(header_byte(), CAP + SCHEME_ALLOWANCE + 1..=400)
            .prop_map(|value| AuthCase { values: vec![value], expect: Err(TokenError::TooLarge) }),
        // No header, or Bearer with nothing after it.
        1 => Just(AuthCase { values: vec![], expect: Err(TokenError::Missing) }),
        1 => (bearer_scheme(), 1..=10usize).prop_map(|(scheme, spaces)| AuthCase {
            values: vec![format!("{scheme}{}", " ".repeat(spaces)).into_bytes()],
            expect: Err(TokenError::Missing),
        }),
        // Another scheme, a scheme glued to the token, or no separating space.
        2 => ("[!-~]{0,12}", proptest::option::of("[\t -~]{0,100}")).prop_map(|(scheme, rest)| {
            let scheme = if scheme.eq_ignore_ascii_case("bearer") { format!("{scheme}x") } else { scheme };
            let value = match rest {
                Some(rest) => format!("{scheme} {rest}"),
                None => scheme,
            };
            AuthCase { values: vec![value.into_bytes()], expect: Err(TokenError::NotBearer) }
        }),
        1 => (bearer_scheme(), "[!-~]{1,100}").prop_map(|(scheme, token)| AuthCase {
            values: vec![format!("{scheme}\t{token}").into_bytes()],
            expect: Err(TokenError::NotBearer),
        }),
        // Two or three headers, whatever they hold.
        1 => proptest::collection::vec(proptest::collection::vec(header_byte(), 0..300), 2..=3)
            .prop_map(|values| AuthCase { values, expect: Err(TokenError::MultipleHeaders) }),
        // Not UTF-8 (a lone 0xFF, a stray continuation byte, a cut multi-byte sequence).
        1 => ("[\t -~]{0,60}", select(vec![&b"\xff"[..], &b"\x80"[..], &b"\xe2\x82"[..]]), "[\t -~]{0,60}")
            .prop_map(|(head, bad, tail)| AuthCase {
                values: vec![[head.as_bytes(), bad, tail.as_bytes()].concat()],
                expect: Err(TokenError::Malformed),
            }),
    ]
}

#[test]
fn authorization_parsing_returns_the_token_or_the_exact_refusal() {
    let counts = run_classified(authorization_cases(), |case| {
        let mut headers = http::HeaderMap::new();
        for v in &case.values {
            headers.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        let got = bearer_token(&headers, CAP).map(str::to_string);
        prop_assert_eq!(&got, &case.expect, "values {:?}", case.values);
        Ok(class_of(&case.expect))
    });
    assert_shares(
        &counts,
        &["accepted"],
        &[
            "token_too_large",
            "missing_token",
            "unsupported_auth_scheme",
            "multiple_authorization_headers",
            "malformed_token",
        ],
        30,
    );
}

// === Compact JWS header ===

/// How the three parts are put together.
#[derive(Debug, Clone)]
enum Structure {
    ThreeParts,
    /// `header.payload`
    TwoParts,
    /// `header.payload.signature.extra`
    FourParts,
    /// Any text whose dot count is not two.
    Garbage(String),
}

/// How the header JSON is encoded.
#[derive(Debug, Clone)]
enum Encoding {
    Base64Url,
    /// base64url with a `=` appended.
    Padded,
    /// A character outside the base64url alphabet inserted.
    ForeignChar(char, usize),
    Empty,
}

/// The header text's overall shape.
#[derive(Debug, Clone)]
enum Shape {
    Object,
    /// The closing brace dropped.
    Truncated,
    /// The object text as a JSON string.
    StringLiteral,
    /// Text after the object.
    TrailingGarbage,
}

/// One header parameter's value: valid (a string, or absent), or of the wrong JSON type.
#[derive(Debug, Clone)]
enum Param {
    Absent,
    Null,
    Text(String),
    WrongType(Value),
}

impl Param {
    fn member(&self, name: &str) -> Option<(String, String)> {
        match self {
            Param::Absent => None,
            Param::Null => Some((name.into(), "null".into())),
            Param::Text(s) => Some((name.into(), json!(s).to_string())),
            Param::WrongType(v) => Some((name.into(), v.to_string())),
        }
    }
}

/// A compact JWS and the answer `parse_compact` must give under `allowed`.
#[derive(Debug, Clone)]
struct JwsCase {
    token: String,
    allowed: Vec<Algorithm>,
    expect: Result<(Algorithm, Option<String>), TokenError>,
}

/// The names `allowed` lists, spelled as in a JOSE header.
fn algorithm_named(name: &str, allowed: &[Algorithm]) -> Option<Algorithm> {
    [
        ("RS256", Algorithm::RS256),
        ("RS384", Algorithm::RS384),
        ("RS512", Algorithm::RS512),
    ]
    .into_iter()
    .find(|(n, a)| *n == name && allowed.contains(a))
    .map(|(_, a)| a)
}

const ACCESS_TOKEN_TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];
const FORBIDDEN_PARAMETERS: [&str; 7] = ["crit", "jku", "x5u", "jwk", "x5c", "b64", "zip"];

fn wrong_json_type() -> impl Strategy<Value = Value> {
    select(vec![
        json!(256),
        json!(true),
        json!(["RS256"]),
        json!({"v": "RS256"}),
    ])
}

/// Flips the letter case of some characters.
fn recase(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().cycle())
        .map(|(c, flip)| {
            if *flip {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn alg_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        12 => Just(Param::Text("RS256".into())),
        3 => select(vec!["RS384", "RS512"]).prop_map(|a| Param::Text(a.into())),
        3 => prop_oneof![
            select(vec![
                "none", "None", "HS256", "HS512", "PS256", "PS512", "ES256", "ES384", "EdDSA",
                "rs256", "Rs256", "RS256 ", " RS256", "RS-256", "RS256\0", "",
            ]).prop_map(str::to_string),
            "[A-Za-z0-9+-]{0,8}".prop_map(|s| format!("{s}?")),
        ].prop_map(Param::Text),
        1 => Just(Param::Absent),
        1 => prop_oneof![Just(Value::Null), wrong_json_type()].prop_map(Param::WrongType),
    ]
}

fn typ_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        5 => Just(Param::Absent),
        1 => Just(Param::Null),
        10 => (select(ACCESS_TOKEN_TYPES.to_vec()), proptest::collection::vec(any::<bool>(), 1..20))
            .prop_map(|(t, flips)| Param::Text(recase(t, &flips))),
        2 => prop_oneof![
            select(vec!["id_token", "JOSE", "dpop+jwt", "logout+jwt", "", "JWT ", "jwt+at", "application/jwt"])
                .prop_map(str::to_string),
            "[a-z+/]{1,10}".prop_map(|s| format!("x-{s}")),
        ].prop_map(Param::Text),
        1 => wrong_json_type().prop_map(Param::WrongType),
    ]
}

fn kid_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        14 => "[ -~]{0,16}".prop_map(Param::Text),
        1 => Just(Param::Null),
        2 => Just(Param::Absent),
        1 => wrong_json_type().prop_map(Param::WrongType),
    ]
}

/// Parameters the gateway neither reads nor refuses.
fn harmless_parameters() -> impl Strategy<Value = Vec<(String, String)>> {
    subsequence(
        vec![
            ("x5t", json!("abc")),
            ("x5t#S256", json!("abc")),
            ("cty", json!("JWT")),
            ("nonce", json!("n")),
            ("exp", json!(123)),
            (
                "ext",
                json!({"jku": "http://127.0.0.1:1/", "crit": ["exp"]}),
            ),
        ],
        0..=3,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    })
}

#[derive(Debug, Clone)]
struct HeaderSpec {
    alg: Param,
    typ: Param,
    kid: Param,
    forbidden: Option<(&'static str, Value)>,
    extra: Vec<(String, String)>,
    /// Repeats the member at this index (mod the member count), when set.
    duplicate: Option<usize>,
    order: Vec<usize>,
}

impl HeaderSpec {
    /// The header JSON text, and whether a known member was given twice.
    fn text(&self) -> (String, bool) {
        let mut members: Vec<(String, String)> = [
            self.alg.member("alg"),
            self.typ.member("typ"),
            self.kid.member("kid"),
            self.forbidden
                .as_ref()
                .map(|(n, v)| ((*n).to_string(), v.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect();
        let known = members.len();
        members.extend(self.extra.iter().cloned());
        // A fixed permutation of the members, then maybe one known member repeated.
        let mut ordered: Vec<(String, String)> = Vec::new();
        for i in &self.order {
            if let Some(m) = members.get(*i) {
                ordered.push(m.clone());
            }
        }
        let duplicated = match self.duplicate {
            Some(i) if known > 0 => {
                ordered.push(members[i % known].clone());
                true
            }
            _ => false,
        };
        let body: Vec<String> = ordered
            .iter()
            .map(|(n, v)| format!("{}:{v}", json!(n)))
            .collect();
        (format!("{{{}}}", body.join(",")), duplicated)
    }
}

fn header_spec() -> impl Strategy<Value = HeaderSpec> {
    (
        alg_param(),
        typ_param(),
        kid_param(),
        prop_oneof![
            17 => Just(None),
            2 => (select(FORBIDDEN_PARAMETERS.to_vec()), select(vec![Value::Null, json!("http://127.0.0.1:1/"), json!([]), json!({}), json!(false), json!("DEF")]))
                .prop_map(Some),
        ],
        harmless_parameters(),
        prop_oneof![17 => Just(None), 2 => any::<usize>().prop_map(Some)],
        Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(
            |(alg, typ, kid, forbidden, extra, duplicate, order)| HeaderSpec {
                alg,
                typ,
                kid,
                forbidden,
                extra,
                duplicate,
                order,
            },
        )
}

fn jws_cases() -> impl Strategy<Value = JwsCase> {
    let structure = prop_oneof![
        37 => Just(Structure::ThreeParts),
        1 => Just(Structure::TwoParts),
        1 => Just(Structure::FourParts),
        1 => prop_oneof!["[A-Za-z0-9_=+/. -]{0,200}", ".*"].prop_map(|s| {
            // Any dot count but two.
            let s = if s.matches('.').count() == 2 { format!("{s}.") } else { s };
            Structure::Garbage(s)
        }),
    ];
    let encoding = prop_oneof![
        37 => Just(Encoding::Base64Url),
        1 => Just(Encoding::Padded),
        1 => (select(vec!['*', '+', '/', ' ', '=', '%']), any::<usize>())
            .prop_map(|(c, at)| Encoding::ForeignChar(c, at)),
        1 => Just(Encoding::Empty),
    ];
    let shape = prop_oneof![
        37 => Just(Shape::Object),
        1 => Just(Shape::Truncated),
        1 => Just(Shape::StringLiteral),
        1 => Just(Shape::TrailingGarbage),
    ];
    let allowed = select(vec![
        vec![Algorithm::RS256],
        vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
    ]);
    let signature = prop_oneof![17 => "[A-Za-z0-9_-]{1,60}", 2 => Just(String::new())];
    (
        structure,
        encoding,
        shape,
        header_spec(),
        allowed,
        "[^.]{0,40}",
        signature,
    )
        .prop_map(
            |(structure, encoding, shape, header, allowed, payload, sig)| {
                let (object, duplicated) = header.text();
                let text = match shape {
                    Shape::Object => object,
                    Shape::Truncated => object[..object.len() - 1].to_string(),
                    Shape::StringLiteral => json!(object).to_string(),
                    Shape::TrailingGarbage => format!("{object}x"),
                };
                let mut header_b64 = URL_SAFE_NO_PAD.encode(&text);
                match encoding {
                    Encoding::Base64Url => {}
                    Encoding::Padded => header_b64.push('='),
                    Encoding::ForeignChar(c, at) => {
                        header_b64.insert(at % (header_b64.len() + 1), c)
                    }
                    Encoding::Empty => header_b64.clear(),
                }
                let token = match &structure {
                    Structure::ThreeParts => format!("{header_b64}.{payload}.{sig}"),
                    Structure::TwoParts => format!("{header_b64}.{payload}"),
                    Structure::FourParts => format!("{header_b64}.{payload}.{sig}.{sig}"),
                    Structure::Garbage(s) => s.clone(),
                };

                // The checks in the order RFC 7515 parsing needs them: structure and
                // encoding, JSON, then header policy, then the signature's presence.
                let wrong_type = [&header.alg, &header.typ, &header.kid]
                    .iter()
                    .any(|p| matches!(p, Param::WrongType(_)));
                let unreadable = !matches!(structure, Structure::ThreeParts)
                    || !matches!(encoding, Encoding::Base64Url)
                    || !matches!(shape, Shape::Object)
                    || duplicated
                    || matches!(header.alg, Param::Absent)
                    || wrong_type;
                let expect = if unreadable {
                    Err(TokenError::Malformed)
                } else if header.forbidden.is_some() {
                    Err(TokenError::ForbiddenHeader)
                } else if matches!(&header.typ, Param::Text(t) if !ACCESS_TOKEN_TYPES.iter().any(|a| a.eq_ignore_ascii_case(t)))
                {
                    Err(TokenError::BadType)
                } else {
                    let Param::Text(alg) = &header.alg else {
                        unreachable!("an absent or mistyped alg is unreadable")
                    };
                    match algorithm_named(alg, &allowed) {
                        None => Err(TokenError::AlgorithmNotAllowed),
                        Some(_) if sig.is_empty() => Err(TokenError::BadSignature),
                        Some(alg) => Ok((
                            alg,
                            match &header.kid {
                                Param::Text(k) => Some(k.clone()),
                                _ => None,
                            },
                        )),
                    }
                };
                JwsCase {
                    token,
                    allowed,
                    expect,
                }
            },
        )
}

#[test]
fn jws_splitting_accepts_exactly_the_well_formed_allowed_headers() {
    let counts = run_classified(jws_cases(), |case| {
        let got = parse_compact(&case.token, &case.allowed).map(|jws| (jws.alg, jws.kid));
        prop_assert_eq!(&got, &case.expect, "token {:?}", case.token);
        Ok(class_of(&case.expect))
    });
    assert_shares(
        &counts,
        &["accepted"],
        &[
            "malformed_token",
            "forbidden_header",
            "unsupported_token_type",
            "algorithm_not_allowed",
            "invalid_signature",
        ],
        20,
    );
}

// === Caller classification ===

/// What classification must yield for a well-formed claims document.
#[derive(Debug, Clone, PartialEq)]
struct Classified {
    kind: CallerKind,
    actor_id: String,
    subject_id: String,
    blueprint_id: Option<String>,
    actor_facets: Vec<u32>,
    subject_facets: Vec<u32>,
    tenant_facets: Vec<u32>,
}

/// A claims document as the generator chose it.
#[derive(Debug, Clone)]
struct ClaimSet {
    /// `Some("1.0")` reads the client from `appid`; anything else from `azp`.
    ver: Option<&'static str>,
    tenant: String,
    actor: String,
    /// A different id under the client claim the version does not read.
    decoy: Option<String>,
    oid: String,
    idtyp: Option<&'static str>,
    act: Vec<u32>,
    sub: Vec<u32>,
    tnt: Vec<u32>,
    parent: Option<String>,
    roles: bool,
    scp: bool,
    /// Facet list separator and padding.
    sep: &'static str,
}

impl ClaimSet {
    fn facet_text(&self, values: &[u32]) -> Option<String> {
        if values.is_empty() {
            return None;
        }
        let joined: Vec<String> = values.iter().map(u32::to_string).collect();
        Some(format!("{}{}", self.sep, joined.join(self.sep)))
    }

    fn claims(&self) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("tid".into(), json!(self.tenant));
        c.insert("oid".into(), json!(self.oid));
        if let Some(v) = self.ver {
            c.insert("ver".into(), json!(v));
        }
        let (read, unread) = if self.ver == Some("1.0") {
            ("appid", "azp")
        } else {
            ("azp", "appid")
        };
        c.insert(read.into(), json!(self.actor));
        if let Some(d) = &self.decoy {
            c.insert(unread.into(), json!(d));
        }
        if let Some(i) = self.idtyp {
            c.insert("idtyp".into(), json!(i));
        }
        for (name, values) in [
            ("xms_act_fct", &self.act),
            ("xms_sub_fct", &self.sub),
            ("xms_tnt_fct", &self.tnt),
        ] {
            if let Some(text) = self.facet_text(values) {
                c.insert(name.into(), json!(text));
            }
        }
        if let Some(p) = &self.parent {
            c.insert("xms_par_app_azp".into(), json!(p));
        }
        if self.roles {
            c.insert("roles".into(), json!(["Orders.Read.All"]));
        }
        if self.scp {
            c.insert("scp".into(), json!("Orders.Read"));
        }
        c
    }

    fn classified(&self, kind: CallerKind) -> Classified {
        let set = |v: &[u32]| {
            v.iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        Classified {
            kind,
            actor_id: self.actor.clone(),
            subject_id: self.oid.clone(),
            blueprint_id: self.parent.as_ref().map(|p| p.to_ascii_lowercase()),
            actor_facets: set(&self.act),
            subject_facets: set(&self.sub),
            tenant_facets: set(&self.tnt),
        }
    }
}

const AGENT_IDENTITY: u32 = 11;
const AGENT_USER: u32 = 13;

/// A lower-case GUID whose first digit is in `first`, so that ids drawn from different
/// ranges never collide.
fn guid(first: &'static str) -> impl Strategy<Value = String> {
    regex(&format!(
        "[{first}][0-9a-f]{{7}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}"
    ))
}

/// A GUID in any letter case.
fn mixed_case_guid() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
}

/// A facet list holding every value of `with`, none of 11 and 13 otherwise, in any order
/// and with repeats.
fn facets(with: &'static [u32]) -> impl Strategy<Value = Vec<u32>> {
    let other = prop_oneof![0u32..40, any::<u32>()].prop_map(|v| {
        if v == AGENT_IDENTITY || v == AGENT_USER {
            v + 100
        } else {
            v
        }
    });
    proptest::collection::vec(other, 0..4).prop_flat_map(move |mut v| {
        v.extend_from_slice(with);
        if let Some(first) = v.first().copied() {
            v.push(first);
        }
        Just(v).prop_shuffle()
    })
}

/// Which claims a generated document carries, by caller kind.
#[derive(Debug, Clone, Copy)]
enum Plan {
    AgentAppOnly,
    AgentAppBySubjectFacet,
    AgentObo,
    AgentUser,
    AppByIdtyp,
    AppByRoles,
    User,
    AppOboAgentUser,
}

impl Plan {
    fn kind(self) -> CallerKind {
        match self {
            Plan::AgentAppOnly | Plan::AgentAppBySubjectFacet => CallerKind::AgentApp,
            Plan::AgentObo => CallerKind::AgentObo,
            Plan::AgentUser => CallerKind::AgentUser,
            Plan::AppByIdtyp | Plan::AppByRoles => CallerKind::App,
            Plan::User => CallerKind::User,
            Plan::AppOboAgentUser => CallerKind::AppOboAgentUser,
        }
    }

    fn is_agent(self) -> bool {
        self.kind().is_agent()
    }
}

/// A well-formed claims document for `plan`, and what it must classify to.
fn claim_set(plan: Plan) -> impl Strategy<Value = (ClaimSet, Classified)> {
    let (act, sub): (&'static [u32], &'static [u32]) = match plan {
        Plan::AgentAppOnly | Plan::AgentObo => (&[AGENT_IDENTITY], &[]),
        Plan::AgentAppBySubjectFacet => (&[AGENT_IDENTITY], &[AGENT_IDENTITY]),
        Plan::AgentUser => (&[AGENT_IDENTITY], &[AGENT_USER]),
        Plan::AppOboAgentUser => (&[], &[AGENT_USER]),
        Plan::AppByIdtyp | Plan::AppByRoles | Plan::User => (&[], &[]),
    };
    let idtyp = match plan {
        Plan::AgentAppOnly | Plan::AppByIdtyp => Just(Some("app")).boxed(),
        _ => select(vec![None, Some("user")]).boxed(),
    };
    // roles, scp: App needs idtyp app or roles without scp; User must have neither.
    let roles_scp = match plan {
        Plan::AppByRoles => Just((true, false)).boxed(),
        Plan::User => select(vec![(false, false), (false, true), (true, true)]).boxed(),
        _ => (any::<bool>(), any::<bool>()).boxed(),
    };
    (
        (
            select(vec![Some("1.0"), Some("2.0"), None]),
            guid("0-7"),
            guid("89"),
            proptest::option::of(guid("a")),
            idtyp,
            roles_scp,
        ),
        (
            facets(act),
            facets(sub),
            facets(&[]),
            mixed_case_guid(),
            select(vec![" ", "  ", "\t", " \n"]),
        ),
    )
        .prop_map(
            move |(
                (ver, actor, other, decoy, idtyp, (roles, scp)),
                (act, sub, tnt, parent, sep),
            )| {
                // Agent app-only tokens are about the agent itself; everyone else's subject is
                // another object.
                let oid = match plan {
                    Plan::AgentAppOnly | Plan::AgentAppBySubjectFacet => actor.clone(),
                    _ => other,
                };
                let set = ClaimSet {
                    ver,
                    tenant: "aaaaaaaa-1111-1111-1111-000000000001".into(),
                    actor,
                    decoy,
                    oid,
                    idtyp,
                    act,
                    sub,
                    tnt,
                    parent: plan.is_agent().then_some(parent),
                    roles,
                    scp,
                    sep,
                };
                let expected = set.classified(plan.kind());
                (set, expected)
            },
        )
}

fn any_plan() -> impl Strategy<Value = Plan> {
    select(vec![
        Plan::AgentAppOnly,
        Plan::AgentAppBySubjectFacet,
        Plan::AgentObo,
        Plan::AgentUser,
        Plan::AppByIdtyp,
        Plan::AppByRoles,
        Plan::User,
        Plan::AppOboAgentUser,
    ])
}

fn agent_plan() -> impl Strategy<Value = Plan> {
    select(vec![
        Plan::AgentAppOnly,
        Plan::AgentAppBySubjectFacet,
        Plan::AgentObo,
        Plan::AgentUser,
    ])
}

/// A claims document (JSON text) and the answer classification must give.
#[derive(Debug, Clone)]
struct ClassifyCase {
    claims: String,
    expect: Result<Classified, TokenError>,
}

fn classify_cases() -> impl Strategy<Value = ClassifyCase> {
    let valid = any_plan()
        .prop_flat_map(claim_set)
        .prop_map(|(set, expected)| (set.claims(), Ok(expected)));
    let malformed =
        |claims: Map<String, Value>| -> (Map<String, Value>, Result<Classified, TokenError>) {
            (claims, Err(TokenError::MalformedAgentClaims))
        };
    let cases = prop_oneof![
        14 => valid,
        // A facet that is not a u32, in any facet claim of any kind of token.
        2 => (
            any_plan().prop_flat_map(claim_set),
            select(vec!["xms_act_fct", "xms_sub_fct", "xms_tnt_fct"]),
            select(vec!["x", "-1", "1.5", "11.0", "4294967296", "1e3", "0x0b", "11x", "\u{661}\u{661}", "\u{bd}"]),
        ).prop_map(move |((set, _), claim, bad)| {
            let mut c = set.claims();
            let text = c.get(claim).and_then(Value::as_str).unwrap_or("").to_string();
            c.insert(claim.into(), json!(format!("{text} {bad}")));
            malformed(c)
        }),
        // An agent whose blueprint id is not a GUID, or missing.
        2 => (
            agent_plan().prop_flat_map(claim_set),
            prop_oneof![
                mixed_case_guid().prop_map(|g| format!("{{{g}}}")),
                mixed_case_guid().prop_map(|g| g.replace('-', "")),
                mixed_case_guid().prop_map(|g| g[1..].to_string()),
                mixed_case_guid().prop_map(|g| format!("{g} ")),
                mixed_case_guid().prop_map(|g| format!("g{}", &g[1..])),
                Just(String::new()),
                Just("not-a-guid".to_string()),
            ].prop_map(Some).boxed(),
        ).prop_map(move |((mut set, _), parent)| {
            set.parent = parent;
            malformed(set.claims())
        }),
        1 => agent_plan().prop_flat_map(claim_set).prop_map(move |(mut set, _)| {
            set.parent = None;
            malformed(set.claims())
        }),
        // A blueprint id without facet 11 in the actor facets.
        2 => (any_plan().prop_flat_map(claim_set), mixed_case_guid()).prop_map(move |((mut set, _), bp)| {
            set.act.retain(|f| *f != AGENT_IDENTITY);
            set.parent = Some(bp);
            malformed(set.claims())
        }),
        // An app-only agent token about someone else.
        1 => (claim_set(Plan::AgentAppOnly), guid("a-f")).prop_map(move |((mut set, _), oid)| {
            set.oid = oid;
            malformed(set.claims())
        }),
        // A required claim missing: tenant, the version's client claim, subject.
        2 => (any_plan().prop_flat_map(claim_set), 0..3usize).prop_map(|((set, _), which)| {
            let client = if set.ver == Some("1.0") { "appid" } else { "azp" };
            let mut c = set.claims();
            c.remove(["tid", client, "oid"][which]);
            (c, Err(TokenError::MissingClaim))
        }),
        // A claim the gateway reads, of the wrong JSON type.
        2 => (
            any_plan().prop_flat_map(claim_set),
            select(vec![
                ("xms_act_fct", json!(11)),
                ("xms_act_fct", json!([3, 11])),
                ("xms_sub_fct", json!(13)),
                ("xms_par_app_azp", json!(42)),
                ("roles", json!("Orders.Read.All")),
                ("scp", json!(["Orders.Read"])),
                ("oid", json!(5)),
                ("tid", json!(1)),
                ("idtyp", json!(true)),
                ("ver", json!(1.0)),
            ]),
        ).prop_map(|((set, _), (name, v))| {
            let mut c = set.claims();
            c.insert(name.into(), v);
            (c, Err(TokenError::Malformed))
        }),
    ];
    cases.prop_map(|(claims, expect)| ClassifyCase {
        claims: Value::Object(claims).to_string(),
        expect,
    })
}

#[test]
fn classification_yields_the_planned_caller_or_the_exact_refusal() {
    let counts = run_classified(classify_cases(), |case| {
        let got = classify_unverified(case.claims.as_bytes()).map(|c| Classified {
            kind: c.kind,
            actor_id: c.actor_id.to_string(),
            subject_id: c.subject_id.to_string(),
            blueprint_id: c.blueprint_id.as_deref().map(str::to_string),
            actor_facets: c.facets.actor,
            subject_facets: c.facets.subject,
            tenant_facets: c.facets.tenant,
        });
        prop_assert_eq!(&got, &case.expect, "claims {}", case.claims);
        Ok(match &case.expect {
            Ok(c) => c.kind.as_str(),
            Err(e) => e.reason(),
        })
    });
    let kinds: Vec<&str> = CallerKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_shares(
        &counts,
        &kinds,
        &["malformed_agent_claims", "missing_claim", "malformed_token"],
        45,
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn input_building_never_panics_and_keeps_the_request_verbatim(method in "[A-Z]{1,8}", path in "/[ -~]{0,60}", query in "[ -~]{0,40}", ip in "[0-9.:a-f]{0,40}", header in "[ -~]{0,40}") {
        let claims = serde_json::json!({"tid": "aaaaaaaa-1111-1111-1111-000000000001", "ver": "1.0", "appid": "dddddddd-4444-4444-4444-000000000001",
            "oid": "dddddddd-4444-4444-4444-000000000001", "idtyp": "app", "xms_act_fct": "11", "xms_sub_fct": "11", "xms_par_app_azp": "cccccccc-3333-3333-3333-000000000001"});
        let caller = classify_unverified(claims.to_string().as_bytes()).unwrap();
        let token = VerifiedToken {
            caller, version: TokenVersion::V1, issuer: Arc::from("iss"), audience: Arc::from("aud"), expires_at: 1, not_before: None,
            issued_at: None, idtyp: None, scopes: vec![], roles: vec![Arc::from("R")], kid: "k".into(),
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_str(&header).unwrap());
        let facts = RequestFacts { method: &method, host: "h", path: &path, query: &query, client_ip: &ip, headers: &headers, time_ns: 7, upgrade: None, client_certificate: None };
        let parts = InputParts { route: &RouteInput::new("r", "/"), token: &token, directory: &PreparedDirectory::default(), resolution: &Resolution::default(), input_headers: &[http::HeaderName::from_static("user-agent")] };
        let input = build_input(&facts, parts);
        let json: serde_json::Value = serde_json::from_str(&input.to_json_str().unwrap()).unwrap();
        prop_assert_eq!(json["request"]["path"].as_str(), Some(path.as_str()));
        prop_assert_eq!(json["request"]["query"].as_str(), Some(query.as_str()));
        prop_assert_eq!(json["request"]["headers"]["user-agent"].as_str(), Some(header.as_str()));
        prop_assert_eq!(json["blueprint"]["known"].as_bool(), Some(false));
    }
}
