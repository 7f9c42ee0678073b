use super::*;

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(AUTHORIZATION, v.parse().unwrap());
    }
    h
}

#[test]
fn bearer_extraction_rules() {
    assert_eq!(bearer_token(&headers(&[]), 100), Err(TokenError::Missing));
    assert_eq!(bearer_token(&headers(&["Bearer abc"]), 100), Ok("abc"));
    assert_eq!(bearer_token(&headers(&["bearer  abc"]), 100), Ok("abc"));
    assert_eq!(
        bearer_token(&headers(&["Basic abc"]), 100),
        Err(TokenError::NotBearer)
    );
    assert_eq!(
        bearer_token(&headers(&["Bearer"]), 100),
        Err(TokenError::NotBearer)
    );
    assert_eq!(
        bearer_token(&headers(&["Bearer "]), 100),
        Err(TokenError::Missing)
    );
    assert_eq!(
        bearer_token(&headers(&["Bearer a", "Bearer b"]), 100),
        Err(TokenError::MultipleHeaders)
    );
    let big = format!("Bearer {}", "a".repeat(101));
    assert_eq!(
        bearer_token(&headers(&[&big]), 100),
        Err(TokenError::TooLarge)
    );
    let exact = format!("Bearer {}", "a".repeat(100));
    assert!(bearer_token(&headers(&[&exact]), 100).is_ok());
}

#[test]
fn lifetime_boundaries_respect_the_leeway() {
    let now = 1_000_000;
    assert_eq!(check_lifetime(now - 60, None, None, now, 60), Ok(()));
    assert_eq!(
        check_lifetime(now - 61, None, None, now, 60),
        Err(TokenError::Expired)
    );
    assert_eq!(
        check_lifetime(now + 10, Some(now + 60), None, now, 60),
        Ok(())
    );
    assert_eq!(
        check_lifetime(now + 100, Some(now + 61), None, now, 60),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        check_lifetime(now + 100, None, Some(now + 61), now, 60),
        Err(TokenError::IssuedInFuture)
    );
}

#[test]
fn issuer_must_match_tid_and_version() {
    let tid = "aaaaaaaa-1111-1111-1111-000000000001";
    let claims = |iss: String, ver: &str| -> Claims {
        serde_json::from_value(serde_json::json!({"iss": iss, "ver": ver})).unwrap()
    };
    assert_eq!(
        check_issuer(
            &claims(Issuers::default().v1(tid), "1.0"),
            tid,
            &Issuers::default()
        ),
        Ok(TokenVersion::V1)
    );
    assert_eq!(
        check_issuer(
            &claims(Issuers::default().v2(tid), "2.0"),
            tid,
            &Issuers::default()
        ),
        Ok(TokenVersion::V2)
    );
    assert_eq!(
        check_issuer(
            &claims(Issuers::default().v2(tid), "1.0"),
            tid,
            &Issuers::default()
        ),
        Err(TokenError::BadIssuer)
    );
    assert_eq!(
        check_issuer(
            &claims(format!("{}x", Issuers::default().v1(tid)), "1.0"),
            tid,
            &Issuers::default()
        ),
        Err(TokenError::BadIssuer)
    );
    assert_eq!(
        check_issuer(
            &claims(Issuers::default().v1("other"), "1.0"),
            tid,
            &Issuers::default()
        ),
        Err(TokenError::BadIssuer)
    );
}

#[test]
fn another_clouds_issuers_are_accepted_only_where_configured() {
    let tid = "aaaaaaaa-1111-1111-1111-000000000001";
    let claims = |iss: String, ver: &str| -> Claims {
        serde_json::from_value(serde_json::json!({"iss": iss, "ver": ver})).unwrap()
    };
    let gov = crate::entra::Cloud::UsGovernment.issuers();
    let public = Issuers::default();
    let gov_v2 = format!("https://login.microsoftonline.us/{tid}/v2.0");
    assert_eq!(
        check_issuer(&claims(gov_v2.clone(), "2.0"), tid, &gov),
        Ok(TokenVersion::V2)
    );
    assert_eq!(
        check_issuer(&claims(gov_v2, "2.0"), tid, &public),
        Err(TokenError::BadIssuer)
    );
    assert_eq!(
        check_issuer(&claims(public.v2(tid), "2.0"), tid, &gov),
        Err(TokenError::BadIssuer)
    );
    let custom = Issuers::new("sts.example.test", "login.example.test");
    let custom_v1 = format!("https://sts.example.test/{tid}/");
    assert_eq!(
        check_issuer(&claims(custom_v1, "1.0"), tid, &custom),
        Ok(TokenVersion::V1)
    );
}

#[test]
fn scope_forms_for_no_scopes_are_equivalent() {
    assert!(scopes(None).is_empty());
    assert!(scopes(Some("")).is_empty());
    assert!(scopes(Some("/")).is_empty());
    let s = scopes(Some("Orders.Read  Orders.Write"));
    assert_eq!(
        s.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["Orders.Read", "Orders.Write"]
    );
}

#[test]
fn strict_base64url_rejects_padding_and_bad_trailing_bits() {
    assert!(B64URL.decode("YQ").is_ok());
    assert!(B64URL.decode("YQ==").is_err());
    assert!(B64URL.decode("YR").is_err(), "non-canonical trailing bits");
    assert!(B64URL.decode("a+b/").is_err(), "standard alphabet");
}
